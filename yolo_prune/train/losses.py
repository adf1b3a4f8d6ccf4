"""Detection losses: ultralytics' v8DetectionLoss for anchor-free heads, our own yolov5-style loss for anchor heads.

Both follow the yolov5/ultralytics convention: ``loss(raw, batch) -> (total * batch_size, {component: value})``
where batch holds ``batch_idx`` (n,), ``cls`` (n, 1) and ``bboxes`` (n, 4) as normalised cx, cy, w, h.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from ..models import registry
# ultralytics' losses are imported inside the functions that use them (heavy, not needed to import yolo_prune)


def build_loss(detector, cfg: dict, imgsz: int):
    """The loss its family registered (``registry.Family.loss``, a key of ``LOSSES``)."""
    name = getattr(detector, "family", None)
    family = next((f for f in registry.families() if f.name == name), None)
    if family is None or family.loss not in LOSSES:
        raise ValueError(f"{type(detector).__name__}: no loss for model family {name!r} (families with a loss: "
                         f"{', '.join(f.name for f in registry.families() if f.loss in LOSSES)})")
    return LOSSES[family.loss](detector, cfg, imgsz)


def find_detect_head(detector) -> nn.Module:
    """ultralytics' Detect module (the one with ``reg_max`` and ``stride``)."""
    heads = [m for m in detector.modules() if hasattr(m, "reg_max") and hasattr(m, "stride") and hasattr(m, "nc")]
    if not heads:
        raise ValueError(f"{type(detector).__name__}: no ultralytics Detect head found (anchor_free detector "
                         "expected a module with reg_max, stride and nc)")
    return heads[-1]


class _LossView:
    """What v8DetectionLoss reads from a DetectionModel, without touching the model itself."""

    def __init__(self, detector, head, hyp):
        self._detector, self.model, self.args = detector, [head], hyp
        self.class_weights = None

    def parameters(self):
        return self._detector.parameters()


class AnchorFreeLoss:
    """ultralytics' loss (TAL assignment, CIoU + DFL, BCE classes) with the gains it was tuned with."""

    components = ("box", "cls", "dfl")

    def __init__(self, detector, cfg: dict):
        from ultralytics.utils.loss import E2ELoss, v8DetectionLoss

        head = find_detect_head(detector)
        hyp = SimpleNamespace(box=float(cfg["box"]), cls=float(cfg["cls"]), dfl=float(cfg["dfl"]))
        view = _LossView(detector, head, hyp)
        if getattr(head, "one2one_cv2", None) is not None:  # end-to-end heads (yolov10/yolo26 style)
            self.criterion = E2ELoss(view)
        else:
            self.criterion = v8DetectionLoss(view)

    def __call__(self, raw, batch):
        loss, items = self.criterion(raw, batch)
        items = items if isinstance(items, dict) else dict(zip(self.components, items))
        vals = list(items.values())
        return loss.sum(), {name: float(v) for name, v in zip(self.components, vals)}


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of matching rows of two (n, 4) cx, cy, w, h tensors."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * \
            (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class AnchorLoss:
    """yolov5's ComputeLoss for anchor heads, also covering darknet [yolo] layers.

    * targets match every anchor whose width and height ratios to the box are within ``anchor_t``;
    * a target is also assigned to the two neighbour cells nearest its centre when the head's xy range reaches
      them (scale_x_y >= 2, i.e. yolov5's 2*sigmoid-0.5); darknet heads with a smaller scale_x_y (v4-tiny: 1.05)
      cannot place a centre in a neighbour cell, so they use the centre cell only;
    * box: 1 - CIoU; objectness: BCE towards the detached IoU; classes: BCE; objectness per level weighted by
      yolov5's balance (4.0, 1.0, 0.4).
    Raw head output per level: (B, na, H, W, 5 + nc) logits. Box decode per family: yolov5
    xy = 2*sigmoid - 0.5, wh = (2*sigmoid)^2 * anchor; darknet xy = s*sigmoid - (s-1)/2, wh = exp * anchor.
    """

    components = ("box", "obj", "cls")

    def __init__(self, detector, cfg: dict, imgsz: int):
        if detector.anchors is None:
            raise ValueError(f"{type(detector).__name__}: head_type {detector.head_type!r} needs anchors, found None")
        self.nc, self.nl = detector.nc, len(detector.strides)
        self.na = detector.anchors.shape[1]
        self.darknet = detector.head_type == "darknet"
        self.strides = [float(s) for s in detector.strides]
        # anchors in grid units of their level
        self.anchors = detector.anchors.float() / torch.tensor(self.strides).view(-1, 1, 1)
        if self.darknet:
            scales = getattr(detector, "scale_x_y", 1.0)
            self.scale_xy = [float(s) for s in (scales if isinstance(scales, (list, tuple)) else [scales] * self.nl)]
        else:
            self.scale_xy = [2.0] * self.nl
        self.balance = {3: [4.0, 1.0, 0.4]}.get(self.nl, [4.0, 1.0, 0.25, 0.06, 0.02])[: self.nl]
        self.box_gain = float(cfg["v5_box"]) * 3 / self.nl
        self.cls_gain = float(cfg["v5_cls"]) * self.nc / 80 * 3 / self.nl
        self.obj_gain = float(cfg["v5_obj"]) * (imgsz / 640) ** 2 * 3 / self.nl
        self.anchor_t = float(cfg["anchor_t"])
        eps = float(cfg.get("label_smoothing", 0.0))
        self.cp, self.cn = 1.0 - 0.5 * eps, 0.5 * eps
        self.bce = nn.BCEWithLogitsLoss()

    def _pred_box(self, p: torch.Tensor, anchors: torch.Tensor, level: int) -> torch.Tensor:
        s = self.scale_xy[level]
        pxy = p[:, :2].sigmoid() * s - 0.5 * (s - 1)
        if self.darknet:
            pwh = p[:, 2:4].clamp(max=8.0).exp() * anchors  # clamp: exp of an early-training logit can overflow
        else:
            pwh = (p[:, 2:4].sigmoid() * 2) ** 2 * anchors
        return torch.cat((pxy, pwh), 1)

    def __call__(self, raw, batch):
        if len(raw) != self.nl:
            raise ValueError(f"anchor loss: expected {self.nl} head outputs (one per stride {self.strides}), "
                             f"found {len(raw)}")
        device = raw[0].device
        targets = torch.cat((batch["batch_idx"].view(-1, 1).float(), batch["cls"].view(-1, 1).float(),
                             batch["bboxes"].float()), 1).to(device)
        lbox, lobj, lcls = (torch.zeros((), device=device) for _ in range(3))
        for i, (pi, (b, a, gj, gi, tbox, anch, tcls)) in enumerate(zip(raw, self.build_targets(raw, targets))):
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=device)
            if b.numel():
                ps = pi[b, a, gj, gi]
                iou = bbox_ciou(self._pred_box(ps[:, :4], anch, i), tbox)
                lbox = lbox + (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                if self.nc > 1:
                    t = torch.full_like(ps[:, 5:], self.cn)
                    t[torch.arange(len(tcls), device=device), tcls] = self.cp
                    lcls = lcls + self.bce(ps[:, 5:], t)
            lobj = lobj + self.bce(pi[..., 4], tobj) * self.balance[i]
        lbox, lobj, lcls = lbox * self.box_gain, lobj * self.obj_gain, lcls * self.cls_gain
        bs = raw[0].shape[0]
        total = (lbox + lobj + lcls) * bs
        return total, {"box": float(lbox.detach()), "obj": float(lobj.detach()), "cls": float(lcls.detach())}

    def build_targets(self, raw, targets):
        """Per level: image index, anchor index, grid y, grid x, target box (offset in cell, wh), anchor, class."""
        device = targets.device
        nt = targets.shape[0]
        ai = torch.arange(self.na, device=device).float().view(self.na, 1).repeat(1, nt)
        tg = torch.cat((targets.repeat(self.na, 1, 1), ai[..., None]), 2)  # (na, nt, 7)
        g = 0.5
        off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device).float() * g
        gain = torch.ones(7, device=device)
        out = []
        for i, pi in enumerate(raw):
            anchors = self.anchors[i].to(device)
            h, w = pi.shape[2], pi.shape[3]
            gain[2:6] = torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
            t = tg * gain
            if nt:
                r = t[..., 4:6] / anchors[:, None]
                t = t[torch.max(r, 1 / r).max(2)[0] < self.anchor_t]
                gxy = t[:, 2:4]
                if self.scale_xy[i] >= 2.0:  # the head can reach half a cell beyond its own: use neighbours
                    gxi = gain[[2, 3]] - gxy
                    j, k = ((gxy % 1 < g) & (gxy > 1)).T
                    l, m = ((gxi % 1 < g) & (gxi > 1)).T
                    sel = torch.stack((torch.ones_like(j), j, k, l, m))
                    t = t.repeat((5, 1, 1))[sel]
                    offsets = (torch.zeros_like(gxy)[None] + off[:, None])[sel]
                else:
                    offsets = torch.zeros_like(gxy)
            else:
                t = tg[0]
                offsets = torch.zeros_like(t[:, 2:4])
            bc, gxy, gwh, a = t[:, :2], t[:, 2:4], t[:, 4:6], t[:, 6]
            a, (b, c) = a.long(), bc.long().T
            gij = (gxy - offsets).long()
            gij[:, 0].clamp_(0, w - 1)
            gij[:, 1].clamp_(0, h - 1)
            gi, gj = gij.T
            out.append((b, a, gj, gi, torch.cat((gxy - gij, gwh), 1), anchors[a], c))
        return out


# loss name (what a family registers as ``Family.loss``) -> factory(detector, cfg, imgsz)
LOSSES = {
    "anchor_free": lambda detector, cfg, imgsz: AnchorFreeLoss(detector, cfg),
    "anchor": AnchorLoss,
}
