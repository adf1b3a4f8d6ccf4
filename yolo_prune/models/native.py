"""Every stage that writes a model also writes it in its family's native format, beside our ``X.pt``.

* ultralytics: ``X.ultralytics.pt`` (``ultralytics.YOLO`` opens it; pruned models carry the marker that makes
  ultralytics' default trainer refuse them, see ``models.ultralytics.PRUNED_MARKER``)
* darknet: ``X.cfg`` + ``X.weights``
* legacy yolov5: ``X.yolov5.pt`` (the yolov5 repo's val.py / detect.py / export.py load it)

Layers a family cannot express (``CompensatedConv2d`` from ``--compensate exact``) give no native file and a
note saying why; our ``X.pt`` is always there.
"""
from __future__ import annotations

from pathlib import Path

from .spec import CompensatedConv2d

__all__ = ["write_native"]


def write_native(detector, out: str | Path) -> dict:
    """Write the native file(s) for ``detector`` beside ``out`` (our .pt path).

    Returns {"files": [paths written], "ultralytics"/"darknet"/"yolov5": path or [cfg, weights] or None,
    "notes": [why something was not written]}. On error nothing of it is left behind.
    """
    out = Path(out)
    family = getattr(detector, "family", "")
    report: dict = {"files": [], "notes": []}
    if family not in ("ultralytics", "darknet", "yolov5"):
        return report
    if any(isinstance(m, CompensatedConv2d) for m in detector.modules()):
        report[family] = None
        kind = {"darknet": "darknet cfg", "ultralytics": "ultralytics .pt", "yolov5": "yolov5 .pt"}[family]
        report["notes"].append(f"exact compensation adds CompensatedConv2d layers, which a {kind} cannot express; "
                               f"no {kind} written (prune with --compensate bias for one)")
        return report
    try:
        if family == "ultralytics":
            from .ultralytics import save_ultralytics_pt
            p = save_ultralytics_pt(detector, out.with_suffix(".ultralytics.pt"))
            report["files"].append(p)
            report["ultralytics"] = str(p)
        elif family == "darknet":
            from .darknet import write_cfg, write_weights
            report["files"].append(write_cfg(detector, out.with_suffix(".cfg")))
            report["files"].append(write_weights(detector, out.with_suffix(".weights")))
            report["darknet"] = [str(p) for p in report["files"]]
        else:
            from .yolov5_legacy import save_yolov5_pt
            p = save_yolov5_pt(detector, out.with_suffix(".yolov5.pt"))
            report["files"].append(p)
            report["yolov5"] = str(p)
    except BaseException:
        for p in report["files"]:
            Path(p).unlink(missing_ok=True)
        raise
    report["files"] = [str(p) for p in report["files"]]
    return report
