"""Every stage that writes a model also writes it in its family's native format, beside our ``X.pt``.

Each family registers its writer (``registry.Family.write_native``):

* ultralytics: ``X.ultralytics.pt`` (``ultralytics.YOLO`` opens it; pruned models carry the marker that makes
  ultralytics' default trainer refuse them, see ``models.ultralytics.PRUNED_MARKER``)
* darknet: ``X.cfg`` + ``X.weights``
* legacy yolov5: ``X.yolov5.pt`` (the yolov5 repo's val.py / detect.py / export.py load it)

Layers a family cannot express (``CompensatedConv2d`` from ``--compensate exact``) give no native file and a
note saying why; our ``X.pt`` is always there.
"""
from __future__ import annotations

from pathlib import Path

from . import registry
from .spec import CompensatedConv2d

__all__ = ["write_native"]


def write_native(detector, out: str | Path) -> dict:
    """Write the native file(s) for ``detector`` beside ``out`` (our .pt path).

    Returns {"files": [paths written], "<family>": its path, or its list of paths when it writes several, or None,
    "notes": [why something was not written]}. On error nothing of it is left behind.
    """
    out = Path(out)
    name = getattr(detector, "family", "")
    family = next((f for f in registry.families() if f.name == name and f.write_native is not None), None)
    report: dict = {"files": [], "notes": []}
    if family is None:
        return report
    if any(isinstance(m, CompensatedConv2d) for m in detector.modules()):
        report[name] = None
        kind = family.native_kind
        report["notes"].append(f"exact compensation adds CompensatedConv2d layers, which a {kind} cannot express; "
                               f"no {kind} written (prune with --compensate bias for one)")
        return report
    files = [str(p) for p in family.write_native(detector, out)]  # each writer removes its own files on error
    report["files"] = files
    report[name] = files[0] if len(files) == 1 else files
    return report
