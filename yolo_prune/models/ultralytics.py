"""Ultralytics detectors (YOLOv8 / YOLO11 / YOLOv5u ...): yaml builds, .pt loading and ultralytics-format saving.

Everything is built offline from ultralytics' packaged model yamls (or the user's own yaml files); nothing is
downloaded. ``.pt`` files are read through the allow-list unpickler, then the weights are loaded into a freshly
built model (with the checkpoint's layer widths), so the Detector never holds objects that came out of a pickle.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml
from torch import nn

from ..io import atomic_write
from . import registry
from .detector import Detector
from .detector import names_dict as _names_dict
from .safe_pickle import base_policy, import_known, restricted_getattr
from .transfer import ClassConv
from .validate import ModelSpecError, check_int, check_yaml_architecture, dry_run, guarded_build, limits, \
    read_yaml_file
# ultralytics is imported inside the functions that use it (heavy, not needed to import yolo_prune)

__all__ = ["UltralyticsDetector", "load_yaml_model", "resolve_model_yaml", "build_ultralytics",
           "load_ultralytics_pt", "save_ultralytics_pt", "PRUNED_MARKER", "pruned_marker", "mark_pruned",
           "unmark_pruned", "ultralytics_policy", "FAMILY"]

# Key in a pruned model's ``yaml`` dict (it travels inside every ultralytics checkpoint: ours, and the best.pt /
# last.pt that ultralytics' trainer writes from it). Ultralytics' own trainer rebuilds a model from its yaml and
# copies only the weights whose shapes match, which silently trains a pruned model at full width. A marked yaml
# carries ``scale: <PRUNED_SCALE>``, a scale no yaml defines, so that rebuild fails at once with a KeyError whose
# text says what to do; the real scale is kept under the marker. Predict/val/export never rebuild, so they work.
# ``PrunedTrainer`` never rebuilds either; our loader restores the scale before building.
PRUNED_MARKER = "yolo_prune_pruned"
PRUNED_SCALE = ("PRUNED by yolo_prune: ultralytics' default trainer would rebuild this model from its yaml at "
                "full width. Train it with YOLO(p).train(trainer=yolo_prune.integrations.ultralytics.PrunedTrainer,"
                " ...) or `yolo-prune finetune --engine ultralytics`")


def pruned_marker(yaml_dict) -> dict | None:
    """The marker of a pruned model's yaml ({"scale": real scale, "trainer": ..., "params": ...}) or None."""
    m = yaml_dict.get(PRUNED_MARKER) if isinstance(yaml_dict, dict) else None
    return m if isinstance(m, dict) else None


def mark_pruned(model: nn.Module) -> None:
    """Mark ``model.yaml`` (a DetectionModel's) as pruned, see PRUNED_MARKER. Idempotent."""
    y = dict(model.yaml)
    if pruned_marker(y) is None:
        y[PRUNED_MARKER] = {"scale": y.get("scale"), "params": int(sum(p.numel() for p in model.parameters())),
                            "trainer": "yolo_prune.integrations.ultralytics.PrunedTrainer"}
    y["scale"] = PRUNED_SCALE
    model.yaml = y


def unmark_pruned(yaml_dict: dict) -> dict:
    """A copy of a model yaml with the pruned marker removed and its real scale restored."""
    m = pruned_marker(yaml_dict)
    if m is None:
        return yaml_dict
    y = {k: v for k, v in yaml_dict.items() if k != PRUNED_MARKER}
    if m.get("scale") is None:
        y.pop("scale", None)
    else:
        y["scale"] = m["scale"]
    return y


def widths_differ_from_yaml(model: nn.Module) -> bool:
    """True when a DetectionModel's layer shapes are not what its yaml builds (it was pruned)."""
    from .spec import record_layers

    fresh = build_ultralytics(unmark_pruned(model.yaml), source="model yaml")
    return record_layers(fresh.model) != record_layers(model)


class UltralyticsDetector(Detector):
    """``.model`` is an ``ultralytics.nn.tasks.DetectionModel``; eval output is its decoded (B, N, 4 + nc)."""

    family = "ultralytics"
    head_type = "anchor_free"

    def detect_head(self) -> nn.Module:
        return self.model.model[-1]

    def decode(self, raw) -> torch.Tensor:
        # Detect returns (y, raw dict) in eval mode and y alone in export mode; y is (B, 4 + nc, N), xywh pixels
        y = raw[0] if isinstance(raw, (tuple, list)) else raw
        return y.transpose(1, 2)

    def head_modules(self) -> list[str]:
        """The last Conv2d of every box/class branch of Detect (one2one branches too) and the DFL conv."""
        idx = len(self.model.model) - 1
        head = self.detect_head()
        names = []
        for branch in ("cv2", "cv3", "one2one_cv2", "one2one_cv3", "cv4", "one2one_cv4"):
            seqs = getattr(head, branch, None)
            if not isinstance(seqs, nn.ModuleList):
                continue
            for j, seq in enumerate(seqs):
                last = [n for n, m in seq.named_modules() if isinstance(m, nn.Conv2d)][-1]
                names.append(f"model.model.{idx}.{branch}.{j}.{last}")
        if isinstance(getattr(getattr(head, "dfl", None), "conv", None), nn.Conv2d):
            names.append(f"model.model.{idx}.dfl.conv")
        return names


# ----------------------------------------------------------------------------------------------- yaml models
def _packaged_cfg_dir() -> Path:
    from .. import offline

    offline.apply()
    import ultralytics
    return Path(ultralytics.__file__).parent / "cfg" / "models"


def _guess_scale(stem: str) -> str:
    m = re.search(r"yolo(e-)?v?\d+([nslmx])", stem)
    return m.group(2) if m else ""


def resolve_model_yaml(name_or_path: str | os.PathLike) -> dict:
    """Model yaml dict with its ``scale`` resolved: a file on disk, or a packaged name like ``yolov8n.yaml``."""
    p = Path(name_or_path)
    if p.is_file():
        d = read_yaml_file(p)
        if not isinstance(d, dict):
            raise ValueError(f"{p}: expected a model yaml mapping, found {type(d).__name__}")
        source = p
    else:
        if len(p.parts) > 1:
            raise FileNotFoundError(f"{p}: model yaml not found; supply the file at this path or use a packaged "
                                    "name such as yolov8n.yaml, yolo11n.yaml, yolov5nu.yaml")
        name = p.name
        if ("yolov5" in name or "yolov3" in name) and name.endswith("u.yaml"):
            name = name[: -len("u.yaml")] + ".yaml"  # yolov5nu.yaml is the ultralytics yolov5n.yaml
        unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", Path(name).stem) + p.suffix
        root = _packaged_cfg_dir()
        hits = sorted(root.rglob(name)) or sorted(root.rglob(unified))
        if not hits:
            raise FileNotFoundError(f"{p}: not a file and not a model yaml packaged with ultralytics "
                                    f"(looked for {name} / {unified} under {root})")
        source = hits[0]
        d = yaml.safe_load(source.read_text())
    d = dict(d)
    scales = d.get("scales")
    if isinstance(scales, dict) and scales and not d.get("scale"):
        scale = _guess_scale(p.stem)
        d["scale"] = scale if scale in scales else next(iter(scales))
    d["yaml_file"] = str(p if not p.is_file() else source)
    return d


def _check_ultralytics_yaml(d: dict, source: str) -> None:
    """The shared whole-structure validator (validate.py), plus: every allowed name really is a layer class."""
    import ultralytics.nn.tasks as tasks

    check_yaml_architecture(d, source)
    for i, row in enumerate(d["backbone"] + d["head"]):
        name = row[2]
        obj = getattr(nn, name[3:], None) if name.startswith("nn.") else getattr(tasks, name, None)
        if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
            raise ModelSpecError(f"{source}: layer {i}: module '{name}' is not a layer class of the installed "
                                 "ultralytics")


@contextlib.contextmanager
def _restricted_mode():
    """ultralytics' own no-eval building path (its _SafeLoad), where the installed version has one."""
    import ultralytics.nn.tasks as tasks

    local = getattr(getattr(tasks, "_SafeLoad", None), "_local", None)
    before = getattr(local, "active", False) if local is not None else None
    if local is not None:
        local.active = True
    try:
        yield
    finally:
        if local is not None:
            local.active = before


def _default_args(extra: dict | None = None):
    """Hyperparameter namespace ultralytics' losses read from ``model.args`` (box, cls, dfl gains ...)."""
    from ultralytics.utils import DEFAULT_CFG_DICT, IterableSimpleNamespace

    return IterableSimpleNamespace(**{**DEFAULT_CFG_DICT, **(extra or {})})


def build_ultralytics(base: dict, nc: int | None = None, names=None, source: str = "") -> UltralyticsDetector:
    """Build (random weights, offline) from an ultralytics model yaml dict that includes its ``scale``."""
    from .. import offline

    offline.apply()
    from ultralytics.nn.tasks import DetectionModel, parse_model

    source = source or "ultralytics yaml"
    if not isinstance(base, dict):
        raise ValueError(f"{source}: expected the model yaml as a dict, found {type(base).__name__}")
    base = unmark_pruned(base)  # the recorded layer widths, applied by the caller, carry the pruning
    _check_ultralytics_yaml(base, source)
    names = _names_dict(names, source)
    if names is not None:
        if nc is not None and nc != len(names):
            raise ValueError(f"{source}: nc={nc} but {len(names)} class names were given")
        nc = len(names)
    cfg = copy.deepcopy(base)
    cfg.pop("channels", None)
    ch = int(base.get("channels", 3))
    if nc is not None:
        check_int(nc, source, "nc", 1, limits().max_classes, "max_classes")
    with _restricted_mode():
        dry_run(lambda: parse_model({**copy.deepcopy(cfg), **({"nc": nc} if nc else {})}, ch=ch, verbose=False)[0],
                source, probe_ch=ch)
        # the stride-probing forward inside needs no autograd graph; allocations stay bounded
        with torch.no_grad(), guarded_build(source):
            model = DetectionModel(cfg, ch=ch, nc=nc, verbose=False)
    nc = model.yaml["nc"]
    names = names or {i: str(i) for i in range(nc)}
    model.names = dict(names)
    model.args = _default_args()
    if getattr(model.model[-1], "one2one_cv2", None) is not None:
        model.end2end = False  # decode through the one-to-many branch: (B, N, 4 + nc) like every other head
    spec = {"family": "ultralytics", "base": copy.deepcopy(model.yaml), "nc": nc, "names": dict(names)}
    return UltralyticsDetector(model, names, [int(s) for s in model.stride.tolist()], None, spec)


def load_yaml_model(name_or_path: str | os.PathLike, nc: int | None = None) -> Detector:
    """``yolov8n.yaml``-style packaged names or yaml files (random weights, eval mode); a yaml with ``anchors`` is
    a legacy yolov5 model."""
    d = resolve_model_yaml(name_or_path)
    if "anchors" in d:
        from .yolov5_legacy import build_yolov5
        return build_yolov5(d, nc=nc, source=str(name_or_path)).eval()
    return build_ultralytics(d, nc=nc, source=str(name_or_path)).eval()


# ----------------------------------------------------------------------------------------------- .pt files
def load_ultralytics_pt(path: str | os.PathLike) -> UltralyticsDetector:
    """An ultralytics checkpoint (ema, else model) -> fresh fp32 UltralyticsDetector with its widths and weights."""
    from .safe_pickle import _ema_or_model, allow_list_load, sanitize_module
    from .spec import apply_layers, record_layers
    from .validate import walk_plain

    from .. import offline

    offline.apply()
    path = Path(path)
    ckpt = allow_list_load(path, ultralytics_policy)
    src = _ema_or_model(ckpt)
    if not isinstance(src, nn.Module) or not isinstance(src.__dict__.get("yaml"), dict):
        found = sorted(map(str, ckpt))[:20] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: expected an ultralytics checkpoint with an 'ema' or 'model' DetectionModel "
                         f"(carrying its yaml), found {found}")
    sanitize_module(src, str(path))
    names = src.__dict__.get("names")
    if names is not None:
        walk_plain(names, str(path), "names")
    det = build_ultralytics(unmark_pruned(src.yaml), names=names, source=str(path))
    apply_layers(det.model, record_layers(src), source=str(path))  # pruned widths, if any
    state = src.state_dict()
    fresh = det.model.state_dict()
    bad = [k for k in fresh if k not in state or state[k].shape != fresh[k].shape]
    extra = [k for k in state if k not in fresh]
    if bad or extra:
        raise ValueError(f"{path}: weights do not match the architecture built from its yaml by the installed "
                         f"ultralytics: missing/mismatched {bad[:5]}, unexpected {extra[:5]}")
    det.model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    train_args = ckpt.get("train_args") if isinstance(ckpt, dict) else None
    if isinstance(train_args, dict):  # hyperparameters only: plain values, nothing else is kept
        plain = (str, int, float, bool, type(None))
        det.model.args = _default_args({k: v for k, v in train_args.items() if isinstance(k, str) and (
            isinstance(v, plain) or isinstance(v, (list, tuple)) and len(v) <= 1000 and
            all(isinstance(x, plain) for x in v))})
    return det.eval()


def save_ultralytics_pt(detector: UltralyticsDetector, path: str | os.PathLike, half: bool = False,
                        train_args: dict | None = None) -> Path:
    """Write a checkpoint ``ultralytics.YOLO(path)`` opens for predict/val/export, pruned widths included.

    The file pickles the ultralytics model classes (that is ultralytics' format) and nothing of ours; the write is
    atomic and is checked to hold only globals our allow-list loader accepts. A pruned model's yaml is marked (see
    PRUNED_MARKER) so that ultralytics' default trainer refuses it loudly instead of rebuilding it at full width;
    train it with ``yolo_prune.integrations.ultralytics.PrunedTrainer``.
    """
    from .. import offline

    offline.apply()
    import ultralytics

    from .safe_pickle import is_allowed, pickle_globals

    if getattr(detector, "family", None) != "ultralytics":
        raise ValueError(f"{path}: save_ultralytics_pt needs an ultralytics Detector, found family "
                         f"{getattr(detector, 'family', type(detector).__name__)!r}")
    path = Path(path)
    model = copy.deepcopy(detector.model).cpu().eval()
    for m in model.modules():  # hooks may hold our closures; they are not part of the model
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
                     "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                     "_load_state_dict_post_hooks"):
            hooks = getattr(m, attr, None)
            if hooks:
                hooks.clear()
    if hasattr(model, "criterion"):
        model.criterion = None
    model.names = dict(detector.names)
    model.yaml = unmark_pruned(model.yaml)
    if widths_differ_from_yaml(model):
        mark_pruned(model)
    if half:
        model.half()
    args = dict(vars(model.args)) if hasattr(model, "args") and not isinstance(model.args, dict) else \
        dict(getattr(model, "args", {}) or {})
    args.update(train_args or {})
    args["task"] = "detect"
    model.args = _default_args(args)
    ckpt = {
        "date": datetime.now(timezone.utc).isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": None,
        "ema": model,
        "updates": None,
        "optimizer": None,
        "train_args": {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool, list, tuple,
                                                                         type(None)))},
        "train_metrics": {},
        "train_results": {},
    }
    if pruned_marker(model.yaml) is not None:
        ckpt[PRUNED_MARKER] = dict(pruned_marker(model.yaml))  # for readers that look at the dict, not the model

    def _write(tmp):
        torch.save(ckpt, tmp)
        refused = sorted(g for g in pickle_globals(tmp) if not is_allowed(g, ultralytics_policy))
        if refused:
            raise ValueError(f"{path}: the model holds objects outside ultralytics/torch ({refused[:5]}); "
                             "ultralytics could not load them safely, nothing was written")

    return atomic_write(path, _write)


# ----------------------------------------------------------------------------------------------- pickles
def ultralytics_policy(module: str, name: str):
    """Ultralytics checkpoints: the installed ultralytics nn classes and the few data classes they pickle."""
    if module.startswith("ultralytics.yolo.utils"):  # pre-8.0.44 module path
        module = module.replace("ultralytics.yolo.utils", "ultralytics.utils", 1)
    key = f"{module}.{name}"
    if key in ("ultralytics.utils.IterableSimpleNamespace",):
        from ultralytics.utils import IterableSimpleNamespace
        return IterableSimpleNamespace
    if key == "ultralytics.nn.modules.block.Silence":  # YOLOv9e, removed class
        return nn.Identity
    if key == "ultralytics.nn.tasks.YOLOv10DetectionModel":
        from ultralytics.nn.tasks import DetectionModel
        return DetectionModel
    if key == "builtins.getattr":
        return restricted_getattr
    if module == "ultralytics.nn.tasks" or module.startswith("ultralytics.nn.modules"):  # layers and models only
        mod = import_known(module)
        obj = getattr(mod, name, None) if mod is not None else None
        return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None
    if module in ("ultralytics.utils.loss", "ultralytics.utils.tal"):  # a criterion pickled by older trainers
        mod = import_known(module)
        obj = getattr(mod, name, None) if mod is not None else None
        return obj if isinstance(obj, type) and obj.__module__ == module else None
    return base_policy(module, name)


def _pickle_calls() -> set:
    from .. import offline

    offline.apply()
    try:
        from ultralytics.utils import IterableSimpleNamespace  # pickled as (cls, (), state)
    except ImportError:
        return set()
    return {IterableSimpleNamespace}


# ----------------------------------------------------------------------------------------------- the family
def _class_convs(det) -> list[ClassConv]:
    """The last conv of each class branch of Detect (``cv3``, and ``one2one_cv3`` of end-to-end heads)."""
    head = det.model.model[-1]
    idx = len(det.model.model) - 1
    out = []
    for branch in ("cv3", "one2one_cv3"):
        seqs = getattr(head, branch, None)
        if not isinstance(seqs, nn.ModuleList):
            continue
        for j, seq in enumerate(seqs):
            last = [n for n, m in seq.named_modules() if isinstance(m, nn.Conv2d)][-1]
            out.append(ClassConv(f"model.model.{idx}.{branch}.{j}.{last}", 1, 0, float(det.strides[j])))
    return out


def _class_bias(bias: torch.Tensor, nc: int, stride: float) -> None:
    bias.fill_(math.log(5 / nc / (640 / stride) ** 2))  # Detect.bias_init: about 0.01 objects per cell at 640


def _set_nc(det, nc: int) -> None:
    head = det.model.model[-1]
    head.nc = nc
    head.no = nc + head.reg_max * 4
    det.model.yaml["nc"] = nc
    if hasattr(det.model, "criterion"):
        det.model.criterion = None  # ultralytics caches its loss, which holds nc


def _sniff(path: Path, pickle_globals: frozenset | None) -> bool:
    # a yaml with ``anchors`` is a legacy yolov5 model: load_yaml_model hands it to that family
    if pickle_globals is None:
        return path.suffix.lower() in (".yaml", ".yml")
    return any(g.startswith("ultralytics.") for g in pickle_globals)


def _load(path, nc: int | None = None, weights=None) -> Detector:
    if Path(path).suffix.lower() in (".pt", ".pth"):
        return load_ultralytics_pt(path)
    return load_yaml_model(str(path), nc=nc)


def _write_native(detector, out) -> list[Path]:
    return [save_ultralytics_pt(detector, Path(out).with_suffix(".ultralytics.pt"))]


FAMILY = registry.register(registry.Family(
    name="ultralytics", sniff=_sniff, load=_load, build=build_ultralytics, loss="anchor_free",
    pickle_policy=ultralytics_policy, pickle_calls=_pickle_calls, write_native=_write_native,
    native_kind="ultralytics .pt", head=registry.ClassHead(_class_convs, _class_bias, _set_nc)))
