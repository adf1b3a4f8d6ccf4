"""Legacy YOLOv5 (the yolov5 repo, v6+) without the yolov5 repo.

Our own copies of the ``models.common`` / ``models.yolo`` building blocks, with the yolov5 attribute names so a
checkpoint's state lands on them. ``load_yolov5_pt`` unpickles a ``train.py`` checkpoint through the allow-list
unpickler (only these classes, torch layers and tensors are accepted), then builds a fresh model from the
checkpoint's yaml with ``build_yolov5`` and loads the weights into it, so the result never depends on pickled
objects.
"""
from __future__ import annotations

import ast
import copy
import math
import os
from pathlib import Path

import torch
from torch import nn

from . import registry
from .detector import Detector
from .detector import names_dict as _names_dict
from .safe_pickle import base_policy
from .transfer import ClassConv
from .validate import YOLOV5_LAYERS, ModelSpecError, check_int, check_yaml_architecture, dry_run, guarded_build, \
    limits

__all__ = ["Conv", "Bottleneck", "C3", "SPPF", "SPP", "Focus", "Concat", "Detect", "DetectionModel",
           "YoloV5Detector", "build_yolov5", "load_yolov5_pt", "PICKLE_CLASSES", "save_yolov5_pt",
           "yolov5_policy", "FAMILY"]


def autopad(k, p=None, d=1):
    """'same' padding for kernel k and dilation d."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d + BatchNorm2d + SiLU. Each Conv owns its activation (no shared module) so hooks see one call."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, d=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    def __init__(self, c1, c2, k=(5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Focus(nn.Module):
    """Space-to-depth then Conv (yolov5 < v6 stem)."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x):
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """yolov5 head: one 1x1 conv per level. ``anchors`` buffer is in stride units, as in yolov5.

    forward() always returns the raw per-level tensors (B, na, H, W, 5 + nc); decoding is ``decode_v5``.
    """

    def __init__(self, nc=80, anchors=(), ch=(), inplace=True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace
        self.stride = torch.zeros(self.nl)

    def forward(self, x):
        out = []
        for i in range(self.nl):
            y = self.m[i](x[i])
            bs, _, ny, nx = y.shape
            out.append(y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return out


def decode_v5(raw: list, anchors_px, strides, keep_objectness: bool = False) -> torch.Tensor:
    """(B, na, H, W, 5+nc) logits per level -> (B, N, 4+nc): cx, cy, w, h in pixels, then obj * cls.

    ``keep_objectness``: (B, N, 5+nc) with obj and cls apart, as the yolov5 repo's own export writes it."""
    out = []
    for i, p in enumerate(raw):
        bs, na, ny, nx, _ = p.shape
        s = p.sigmoid()
        yv, xv = torch.meshgrid(torch.arange(ny, device=p.device, dtype=p.dtype),
                                torch.arange(nx, device=p.device, dtype=p.dtype), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2)
        anchor = anchors_px[i].to(p.dtype).view(1, na, 1, 1, 2)
        xy = (s[..., :2] * 2 - 0.5 + grid) * strides[i]
        wh = (s[..., 2:4] * 2) ** 2 * anchor
        scores = s[..., 4:] if keep_objectness else s[..., 5:] * s[..., 4:5]
        out.append(torch.cat((xy, wh, scores), -1).view(bs, -1, 4 + scores.shape[-1]))
    return torch.cat(out, 1)


class DetectionModel(nn.Module):
    """yolov5 ``models.yolo.Model``: an nn.Sequential of layers wired by each layer's ``f`` (from) index."""

    def __init__(self, cfg: dict, ch: int = 3, nc: int | None = None, source: str = "yaml"):
        super().__init__()
        self.yaml = copy.deepcopy(cfg)
        if nc is not None and nc != self.yaml.get("nc"):
            self.yaml["nc"] = nc
        ch = int(self.yaml.get("ch", ch))  # yolov5 records the input channels in its yaml
        self.model, self.save = parse_model(copy.deepcopy(self.yaml), [ch], source)
        self.names = {i: str(i) for i in range(self.yaml["nc"])}
        self.inplace = self.yaml.get("inplace", True)
        m = self.model[-1]
        s = 256
        with torch.no_grad():  # eval mode: measuring strides must not touch BN running statistics
            self.model.eval()
            m.stride = torch.tensor([s / x.shape[-2] for x in self.forward(torch.zeros(1, ch, s, s))])
            self.model.train()
        _check_anchor_order(m)
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        self._initialize_biases()
        _initialize_weights(self)

    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def _initialize_biases(self):
        m = self.model[-1]
        for mi, s in zip(m.m, m.stride):
            b = mi.bias.view(m.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)  # obj (8 objects per 640 image)
            b.data[:, 5:5 + m.nc] += math.log(0.6 / (m.nc - 0.99999))
            mi.bias = nn.Parameter(b.view(-1), requires_grad=True)


def _check_anchor_order(m: Detect) -> None:
    a = m.anchors.prod(-1).mean(-1).view(-1)
    da, ds = a[-1] - a[0], m.stride[-1] - m.stride[0]
    if da and (da.sign() != ds.sign()):
        m.anchors[:] = m.anchors.flip(0)


def _initialize_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03


def make_divisible(x, divisor=8):
    return math.ceil(x / divisor) * divisor


_BLOCKS = {"Conv": Conv, "Bottleneck": Bottleneck, "C3": C3, "SPPF": SPPF, "SPP": SPP, "Focus": Focus,
           "Concat": Concat, "Detect": Detect}
_ACTIVATIONS = {"SiLU", "ReLU", "LeakyReLU", "Hardswish", "Mish", "Identity", "ReLU6", "Sigmoid"}


def _activation(spec: str, source: str) -> nn.Module:
    """'nn.LeakyReLU(0.1)' -> module, literal arguments only (no eval)."""
    try:
        call = ast.parse(str(spec).strip(), mode="eval").body
        assert isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
        assert isinstance(call.func.value, ast.Name) and call.func.value.id == "nn"
        assert call.func.attr in _ACTIVATIONS
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        return getattr(nn, call.func.attr)(*args, **kwargs)
    except Exception as e:
        raise ValueError(f"{source}: field 'activation' expected nn.<{'|'.join(sorted(_ACTIVATIONS))}>(literal "
                         f"args), found {spec!r}") from e


def _resolve_module(name: str, index: int, source: str):
    if name in _BLOCKS:
        return _BLOCKS[name]
    if name.startswith("nn.") and name[3:] in {"Upsample", "MaxPool2d", "BatchNorm2d", "Identity", "ZeroPad2d"}:
        return getattr(nn, name[3:])
    raise ValueError(f"{source}: layer {index}: module '{name}' is not supported; expected one of "
                     f"{sorted(_BLOCKS)} or nn.Upsample/nn.MaxPool2d/nn.BatchNorm2d/nn.Identity")


def parse_model(d: dict, ch: list, source: str = "yaml"):
    """yolov5's parse_model: depth/width multiples, channel bookkeeping, layer wiring (no eval of strings)."""
    for key in ("anchors", "nc", "depth_multiple", "width_multiple", "backbone", "head"):
        if key not in d:
            raise ValueError(f"{source}: yolov5 yaml field '{key}' is missing (found {sorted(d)})")
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    act = d.get("activation")
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    names = {"nc": nc, "anchors": anchors, "None": None, "True": True, "False": False}
    layers, save, c2 = [], [], ch[-1]
    for i, row in enumerate(d["backbone"] + d["head"]):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise ValueError(f"{source}: layer {i} expected [from, number, module, args], found {row!r}")
        f, n, m_name, args = row
        m = _resolve_module(str(m_name), i, source)
        args = [names.get(a, a) if isinstance(a, str) else a for a in args]
        n = n_ = max(round(n * gd), 1) if n > 1 else n
        if m in (Conv, Bottleneck, SPP, SPPF, Focus, C3):
            c1, c2 = ch[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if m is C3:
                args.insert(2, n)
                n = 1
        elif m is nn.BatchNorm2d:
            args = [ch[f]]
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        elif m is Detect:
            args.append([ch[x] for x in f])
            if isinstance(args[1], int):
                args[1] = [list(range(args[1] * 2))] * len(f)
        else:
            c2 = ch[f]
        m_ = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        if act is not None:
            for sub in m_.modules():
                if isinstance(sub, Conv) and isinstance(sub.act, nn.SiLU):
                    sub.act = _activation(act, source)
        m_.i, m_.f, m_.type = i, f, f"models.{'yolo' if m is Detect else 'common'}.{m_name}"
        m_.np = sum(x.numel() for x in m_.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(set(save))


# names the yolov5 repo pickles under models.common / models.yolo -> our classes
PICKLE_CLASSES = {**_BLOCKS, "Model": DetectionModel, "DetectionModel": DetectionModel}


def yolov5_policy(module: str, name: str):
    """Legacy yolov5 checkpoints: models.common.* / models.yolo.* land on our own classes."""
    if module in ("models.common", "models.yolo"):
        return PICKLE_CLASSES.get(name)
    return base_policy(module, name)


class YoloV5Detector(Detector):
    family = "yolov5"
    head_type = "anchor_v5"

    def _detect(self) -> Detect:
        return self.model.model[-1]

    def decode(self, raw) -> torch.Tensor:
        m = self._detect()
        anchors_px = m.anchors * m.stride.to(m.anchors.device).view(-1, 1, 1)
        return decode_v5(raw, anchors_px, self.strides)

    def head_modules(self) -> list[str]:
        idx = len(self.model.model) - 1
        return [f"model.model.{idx}.m.{i}" for i in range(len(self._detect().m))]


def _check_yolov5_yaml(base: dict, nc: int | None, source: str) -> None:
    """The shared validator (validate.py) with the yolov5 layer set, plus the anchors and nc yolov5 needs."""
    lim = limits()
    check_yaml_architecture(base, source, allowed=YOLOV5_LAYERS, lim=lim, heads=("Detect",))
    for key in ("anchors", "nc", "depth_multiple", "width_multiple"):
        if key not in base:
            raise ModelSpecError(f"{source}: yolov5 yaml field '{key}' is missing (found {sorted(base)})")
    check_int(base["nc"] if nc is None else nc, source, "nc", 1, lim.max_classes, "max_classes")
    anchors = base["anchors"]
    if isinstance(anchors, int) and not isinstance(anchors, bool):
        check_int(anchors, source, "anchors", 1, 16)
        return
    ok = isinstance(anchors, list) and 1 <= len(anchors) <= 16 and all(
        isinstance(a, list) and a and len(a) % 2 == 0 and len(a) == len(anchors[0]) and len(a) <= 32 and
        all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1e5 for v in a) for a in anchors)
    if not ok:
        raise ModelSpecError(f"{source}: field 'anchors': expected 1..16 lists of w,h pairs of positive numbers "
                             f"(the same count per level), found {anchors!r}"[:400])


def build_yolov5(base: dict, nc: int | None = None, names=None, source: str = "") -> YoloV5Detector:
    """Build a yolov5 model (random weights) from its yaml dict; ``names`` ({i: name} or list) fixes nc too."""
    source = source or "yolov5 yaml"
    if not isinstance(base, dict):
        raise ValueError(f"{source}: expected the yolov5 yaml as a dict, found {type(base).__name__}")
    names = _names_dict(names, source)
    if names is not None:
        if nc is not None and nc != len(names):
            raise ValueError(f"{source}: nc={nc} but {len(names)} class names were given")
        nc = len(names)
    _check_yolov5_yaml(base, nc, source)
    dry_run(lambda: parse_model({**copy.deepcopy(base), **({"nc": nc} if nc else {})},
                                [int(base.get("ch", 3))], source)[0], source, probe_ch=int(base.get("ch", 3)))
    with guarded_build(source):
        model = DetectionModel(base, nc=nc, source=source)
    nc = model.yaml["nc"]
    names = names or {i: str(i) for i in range(nc)}
    model.names = dict(names)
    m = model.model[-1]
    spec = {"family": "yolov5", "base": copy.deepcopy(model.yaml), "nc": nc, "names": dict(names)}
    anchors_px = (m.anchors * m.stride.view(-1, 1, 1)).detach()
    return YoloV5Detector(model, names, [int(s) for s in m.stride.tolist()], anchors_px, spec)


def load_yolov5_pt(path: str | os.PathLike) -> YoloV5Detector:
    """A yolov5 repo ``train.py`` checkpoint (v6+) -> fresh fp32 YoloV5Detector holding its weights."""
    from .safe_pickle import _ema_or_model, allow_list_load, sanitize_module
    from .validate import walk_plain

    path = Path(path)
    ckpt = allow_list_load(path, yolov5_policy)
    src = _ema_or_model(ckpt)
    if not isinstance(src, nn.Module):
        found = sorted(map(str, ckpt))[:20] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: expected a yolov5 checkpoint dict with an 'ema' or 'model' module, found {found}")
    sanitize_module(src, str(path))
    cfg = src.__dict__.get("yaml") or (ckpt.get("yaml") if isinstance(ckpt, dict) else None)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the model has no 'yaml' architecture dict (yolov5 v6+ checkpoints carry one)")
    names = src.__dict__.get("names") or (ckpt.get("names") if isinstance(ckpt, dict) else None)
    if names is not None:
        walk_plain(names, str(path), "names")
    # yolov5 < v6 stored the derived anchor_grid as a buffer; it is recomputed from anchors and strides
    state = {k: v for k, v in src.state_dict().items() if not k.endswith(".anchor_grid")}
    det = build_yolov5(cfg, names=names, source=str(path))
    from .spec import apply_layers, record_layers

    apply_layers(det.model, record_layers(src), source=str(path))  # pruned widths (save_yolov5_pt), if any
    fresh = det.model.state_dict()
    mismatched = [k for k in fresh if k not in state or state[k].shape != fresh[k].shape]
    extra = [k for k in state if k not in fresh]
    if mismatched or extra:
        raise ValueError(f"{path}: weights do not match the architecture built from its yaml: "
                         f"missing/mismatched {mismatched[:5]}, unexpected {extra[:5]}")
    det.model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    m = det._detect()
    det.strides = tuple(int(s) for s in m.stride.tolist())
    det.anchors = (m.anchors * m.stride.view(-1, 1, 1)).detach().clone()
    return det.eval()


# ----------------------------------------------------------------------------------------------- writing
# our classes -> the names the yolov5 repo defines them under (``Model`` exists in every version from v6.0 on; v6.2+
# defines it as an alias of DetectionModel)
_YOLOV5_NAMES = {**{cls: ("models.common", name) for name, cls in _BLOCKS.items() if cls is not Detect},
                 Detect: ("models.yolo", "Detect"), DetectionModel: ("models.yolo", "Model")}


def _yolov5_pickle_module():
    """A pickle module for torch.save whose Pickler writes our classes under their yolov5 repo names."""
    import pickle
    import types

    class Yolov5Pickler(pickle._Pickler):  # the Python pickler: its save_global can be overridden
        def save_global(self, obj, name=None):
            target = _YOLOV5_NAMES.get(obj) if isinstance(obj, type) else None
            if target is None:
                return super().save_global(obj, name)
            module, qualname = target
            if self.proto >= 4:
                self.save(module)
                self.save(qualname)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
            self.memoize(obj)

    mod = types.ModuleType("yolov5_pickle")
    mod.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
    mod.Pickler = Yolov5Pickler
    return mod


def save_yolov5_pt(detector, path: str | os.PathLike) -> Path:
    """Write a checkpoint the yolov5 repo's val.py / detect.py / export.py load unchanged, pruned widths included.

    The pickle references only ``models.common`` / ``models.yolo`` classes (yolov5 v6/v7 attribute layout: Detect
    with ``grid``/``anchor_grid`` lists and ``stride``, layers wired by ``f``/``i``, ``Model.save``/``yaml``/
    ``names``/``stride``) plus torch layers and tensors, so ``yolo_prune.models.load`` reads it back through the
    allow-list. Written atomically; refuses models that hold anything else (e.g. CompensatedConv2d).
    """
    from datetime import datetime, timezone

    from ..io import atomic_write
    from .safe_pickle import is_allowed, pickle_globals

    if getattr(detector, "family", None) != "yolov5":
        raise ValueError(f"{path}: save_yolov5_pt needs a legacy yolov5 Detector, found family "
                         f"{getattr(detector, 'family', type(detector).__name__)!r}")
    path = Path(path)
    model = copy.deepcopy(detector.model).cpu().float().eval()
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            hooks = getattr(m, attr, None)
            if hooks:
                hooks.clear()
        if isinstance(m, Detect):  # the attributes yolov5's Detect.forward / BaseModel._apply expect
            m.grid = [torch.empty(0) for _ in range(m.nl)]
            m.anchor_grid = [torch.empty(0) for _ in range(m.nl)]
    model.names = dict(detector.names)
    model.nc = detector.nc  # val.py reads model.nc
    for q in model.parameters():  # as yolov5's strip_optimizer leaves a final checkpoint
        q.requires_grad_(False)
    ckpt = {"epoch": -1, "best_fitness": None, "model": model, "ema": None, "updates": None, "optimizer": None,
            "opt": None, "git": None, "date": datetime.now(timezone.utc).isoformat()}

    def _write(tmp):
        torch.save(ckpt, tmp, pickle_module=_yolov5_pickle_module())
        found = pickle_globals(tmp)
        refused = sorted(g for g in found if not is_allowed(g, yolov5_policy) or g.startswith("yolo_prune"))
        if refused:
            raise ValueError(f"{path}: the model holds objects yolov5 cannot load ({refused[:5]}); nothing was "
                             "written")

    return atomic_write(path, _write)


# ----------------------------------------------------------------------------------------------- the family
def _class_convs(det) -> list[ClassConv]:
    """Detect's per-level 1x1 convs: na x (5 box/objectness rows + nc class rows)."""
    m = det.model.model[-1]
    idx = len(det.model.model) - 1
    return [ClassConv(f"model.model.{idx}.m.{i}", m.na, 5, float(det.strides[i])) for i in range(len(m.m))]


def class_bias(bias: torch.Tensor, nc: int, stride: float) -> None:
    """The class prior of yolov5's ``_initialize_biases`` (darknet heads, trained with the yolov5 loss, too)."""
    bias.add_(math.log(0.6 / (nc - 0.99999)))


def _set_nc(det, nc: int) -> None:
    head = det.model.model[-1]
    head.nc, head.no = nc, nc + 5
    det.model.yaml["nc"] = nc


def _sniff(path: Path, pickle_globals: frozenset | None) -> bool:
    # a yolov5 repo checkpoint pickles its classes under models.common / models.yolo (one that also pickles
    # ultralytics classes is the ultralytics family's); yaml files go through the ultralytics family's loader, which
    # builds a yaml with ``anchors`` with this family
    return pickle_globals is not None and any(g.startswith("models.") for g in pickle_globals) and \
        not any(g.startswith("ultralytics.") for g in pickle_globals)


def _load(path, nc: int | None = None, weights=None) -> YoloV5Detector:
    return load_yolov5_pt(path)


def _write_native(detector, out) -> list[Path]:
    return [save_yolov5_pt(detector, Path(out).with_suffix(".yolov5.pt"))]


FAMILY = registry.register(registry.Family(
    name="yolov5", sniff=_sniff, load=_load, build=build_yolov5, loss="anchor",
    pickle_policy=yolov5_policy, write_native=_write_native, native_kind="yolov5 .pt",
    head=registry.ClassHead(_class_convs, class_bias, _set_nc)))
