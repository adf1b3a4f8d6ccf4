"""Loading of the three YOLO families behind one entry point: ``load()``."""
from __future__ import annotations

import os
from pathlib import Path

from .detector import Detector
from .spec import apply_layers, record_layers

__all__ = ["Detector", "load", "build_from_spec", "apply_layers", "record_layers"]


def _builder(family: str, source: str = "spec"):
    if family == "ultralytics":
        from .ultralytics import build_ultralytics
        return build_ultralytics
    if family == "yolov5":
        from .yolov5_legacy import build_yolov5
        return build_yolov5
    if family == "darknet":
        from .darknet import build_darknet
        return build_darknet
    from .validate import ModelSpecError
    raise ModelSpecError(f"{source}: spec field 'family': expected one of ultralytics, yolov5, darknet, found {family!r}"[:200])


def build_from_spec(spec: dict, source: str = "spec") -> Detector:
    """Build the base architecture, then apply the recorded per-layer shapes (pruned widths)."""
    from .validate import ModelSpecError, walk_plain

    if not isinstance(spec, dict):
        raise ModelSpecError(f"{source}: spec expected a mapping, found {type(spec).__name__}")
    walk_plain(spec, source, "spec")
    for key in ("family", "base"):
        if key not in spec:
            raise ModelSpecError(f"{source}: spec field '{key}' is missing (found {sorted(map(str, spec))})")
    if spec.get("layers") is not None and not isinstance(spec["layers"], dict):
        raise ModelSpecError(f"{source}: spec field 'layers' expected a mapping, found {type(spec['layers']).__name__}")
    names = spec.get("names")
    from .. import offline

    offline.apply()  # before the family builder imports ultralytics
    det = _builder(spec["family"], source)(spec["base"], nc=spec.get("nc"), names=names, source=source)
    if spec.get("layers"):
        apply_layers(det, spec["layers"], source=source)
    return det


def load(path_or_cfg, nc: int | None = None, device="cpu", weights: str | os.PathLike | None = None) -> Detector:
    """Load any supported model.

    * ``*.yaml`` / ``yolov8n.yaml``-style names: ultralytics model yaml (legacy yolov5 yaml when it has
      ``anchors``), built offline with random weights.
    * ``*.pt``: a yolo_prune checkpoint, an ultralytics checkpoint or a legacy yolov5 checkpoint (allow-list
      unpickler, nothing in the file can run code).
    * ``*.cfg`` (+ optional ``weights=*.weights``) or ``*.weights`` with a ``.cfg`` of the same stem beside it:
      darknet.
    """
    from .. import offline

    offline.apply()  # before anything below imports ultralytics
    p = Path(path_or_cfg)
    suffix = p.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        from .ultralytics import load_yaml_model
        det = load_yaml_model(str(path_or_cfg), nc=nc)
    elif suffix in {".pt", ".pth"}:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: checkpoint not found. Supply a .pt file (ultralytics, yolov5 or "
                                    "yolo_prune) at this path, e.g. put it in weights/")
        det = _load_pt(p)
    elif suffix in {".cfg", ".weights"}:
        from .darknet import load_darknet
        cfg = p if suffix == ".cfg" else p.with_suffix(".cfg")
        w = weights if weights is not None else (p if suffix == ".weights" else None)
        det = load_darknet(cfg, weights=w, nc=nc)
    else:
        raise ValueError(f"{p}: unsupported model file type '{suffix or p.name}'. Expected .pt, .yaml, .cfg or "
                         ".weights")
    return det.to(device).eval()


def _load_pt(p: Path) -> Detector:
    from .checkpoint import from_checkpoint, is_ours
    from .safe_pickle import pickle_globals, safe_torch_load

    kind = pickle_globals(p)  # lists the globals without executing anything
    if not any(g.startswith(("models.", "ultralytics.")) for g in kind):
        ckpt = safe_torch_load(p)
        if is_ours(ckpt):
            return from_checkpoint(ckpt, source=str(p))
    if any(g.startswith("ultralytics.") for g in kind):
        from .ultralytics import load_ultralytics_pt
        return load_ultralytics_pt(p)
    if any(g.startswith("models.") for g in kind):
        from .yolov5_legacy import load_yolov5_pt
        return load_yolov5_pt(p)
    raise ValueError(f"{p}: not a yolo_prune, ultralytics or yolov5 checkpoint (no model classes found)")
