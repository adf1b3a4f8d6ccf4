"""Loading of the YOLO families behind one entry point: ``load()``.

Each family module registers itself in ``models.registry`` when imported below; ``load`` asks the registered
families which one reads a file (``Family.sniff``), and yolo_prune's own checkpoints name their family in the spec.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import ultralytics, yolov5_legacy, darknet  # noqa: F401, I001  (they register their families, in this order)
from .checkpoint import from_checkpoint, is_ours
from .detector import Detector
from .registry import build_from_spec, for_file
from .safe_pickle import pickle_globals, safe_torch_load
from .spec import apply_layers, record_layers

__all__ = ["Detector", "load", "build_from_spec", "apply_layers", "record_layers"]


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
    if suffix in {".pt", ".pth"}:
        det = _load_pt(p)
    else:
        family = for_file(p)
        if family is None:
            raise ValueError(f"{p}: unsupported model file type '{suffix or p.name}'. Expected .pt, .yaml, .cfg or "
                             ".weights")
        det = family.load(path_or_cfg, nc=nc, weights=weights)
    return det.to(device).eval()


def _load_pt(p: Path) -> Detector:
    if not p.is_file():
        raise FileNotFoundError(f"{p}: checkpoint not found. Supply a .pt file (ultralytics, yolov5 or "
                                "yolo_prune) at this path, e.g. put it in weights/")
    found = frozenset(pickle_globals(p))  # lists the globals without executing anything
    family = for_file(p, found)
    if family is not None:
        return family.load(p)
    ckpt = safe_torch_load(p)  # ours: tensors and plain data only
    if is_ours(ckpt):
        return from_checkpoint(ckpt, source=str(p))
    raise ValueError(f"{p}: not a yolo_prune, ultralytics or yolov5 checkpoint (no model classes found)")
