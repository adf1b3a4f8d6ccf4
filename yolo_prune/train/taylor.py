"""The Taylor criterion's ``grad_fn``: the family's own training loss on a few batches, with labels from a data
yaml (``taylor_grad_fn``) or, without labels, against the model's own confident detections
(``pseudo_label_grad_fn``)."""
from __future__ import annotations

import torch

from ..data.yolo import build_dataset, build_loader, load_data_yaml
from ..eval.infer import non_max_suppression
from ..layers import kept_modes
from ..prune.importance import get_criterion
from ..prune.reconstruct import calibration_batch
from ..prune.taylor import accumulate_gradients
from . import config as train_config
from .losses import build_loss


def taylor_grad_fn(data_yaml, imgsz: int = 320, batches: int = 4, batch: int = 8, seed: int = 0):
    """Return ``grad_fn(model)`` that accumulates loss gradients over ``batches`` batches of ``data_yaml``.

    Augmentation is off so the scores depend only on the data and the seed. ``grad_fn.info`` says where the
    gradients came from (the prune report records it).
    """
    def grad_fn(model) -> None:
        cfg = train_config.resolve({"imgsz": imgsz, "batch": batch})
        data = load_data_yaml(data_yaml)
        stride = max(int(s) for s in model.strides)
        dataset = build_dataset(data, "train", imgsz, batch, cfg, augment=False, stride=stride)
        loader = build_loader(dataset, batch, 0, seed, shuffle=False)
        criterion = build_loss(model, cfg, imgsz)
        device = next(model.parameters()).device

        def loss(m, b):
            return criterion(m(b["img"].to(device).float() / 255), b)[0]

        accumulate_gradients(model, loader, loss, batches)
    grad_fn.info = {"source": "labels", "data": str(data_yaml), "batches": batches, "batch": batch, "imgsz": imgsz}
    return grad_fn


def pseudo_labels(model, images: torch.Tensor, conf: float = 0.25, iou: float = 0.45) -> dict:
    """The model's own detections on ``images`` ((B, 3, H, W) in [0, 1]) as a training batch: boxes with score >=
    ``conf`` after NMS, one class each, normalised cx, cy, w, h (the format of the data loaders' batches)."""
    with kept_modes(model), torch.no_grad():
        model.eval()
        pred = model(images)
        pred = pred[0] if isinstance(pred, (list, tuple)) else pred
        dets = [d.cpu() for d in non_max_suppression(pred, conf=conf, iou=iou)]  # targets live on the CPU
    h, w = images.shape[2:]
    idx = torch.cat([torch.full((len(d),), i, dtype=torch.float32) for i, d in enumerate(dets)])
    xyxy = torch.cat([d[:, :4] for d in dets]).float() / torch.tensor([w, h, w, h], dtype=torch.float32)
    cxcywh = torch.cat(((xyxy[:, :2] + xyxy[:, 2:]) / 2, (xyxy[:, 2:] - xyxy[:, :2])), 1).clamp(0, 1)
    return {"img": images, "batch_idx": idx, "cls": torch.cat([d[:, 5] for d in dets]).float().view(-1, 1),
            "bboxes": cxcywh}


def pseudo_label_grad_fn(images: torch.Tensor, batch: int = 8, conf: float = 0.25, iou: float = 0.45):
    """Return ``grad_fn(model)``: loss gradients on unlabeled ``images`` ((N, 3, S, S) in [0, 1], e.g.
    ``prune.reconstruct.calibration_batch``), the targets being the model's own detections before pruning.

    At the model's own soft outputs the loss gradient would be zero; against its hard, confident detections it
    says which weights the detections it makes depend on. No label is read. A model that detects nothing on the
    images gives no targets to score against, so that is an error, not a silent ranking by background alone."""
    def grad_fn(model) -> None:
        cfg = train_config.resolve({"imgsz": int(images.shape[-1]), "batch": batch})
        criterion = build_loss(model, cfg, int(images.shape[-1]))
        device = next(model.parameters()).device
        batches = [pseudo_labels(model, images[i:i + batch].to(device), conf, iou)
                   for i in range(0, len(images), batch)]
        found = sum(len(b["cls"]) for b in batches)
        grad_fn.info.update(detections=found)
        if found == 0:
            raise ValueError(f"criterion taylor without labels: the model detects nothing with confidence >= {conf} "
                             f"on the {len(images)} --calib images, so there are no pseudo-labels to take gradients "
                             "against; pass --data with labelled images, or --calib images of what the model detects")

        def loss(m, b):
            return criterion(m(b["img"]), b)[0]

        accumulate_gradients(model, batches, loss, len(batches))
    grad_fn.info = {"source": "pseudo-labels", "images": int(len(images)), "conf": conf, "iou": iou}
    return grad_fn


def grad_fn_for(criterion: str, data=None, calib=None, calib_images: int | None = 128, calib_imgsz: int = 320,
                imgsz: int = 320, conf: float = 0.25):
    """The gradient source of a criterion that needs one (taylor): labelled batches of ``data`` when given, else
    pseudo-labels on the unlabeled ``calib`` images; None when the criterion needs no gradients or neither is
    given (prune_model then says what to pass)."""
    if not get_criterion(criterion).needs_gradients:
        return None
    if data is not None:
        return taylor_grad_fn(data, imgsz=min(imgsz, 320))
    if calib is not None:
        return pseudo_label_grad_fn(calibration_batch(calib, calib_images, calib_imgsz), conf=conf)
    return None
