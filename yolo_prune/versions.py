"""Versions of the packages a result depends on (recorded in checkpoints, reports and benchmarks)."""
from __future__ import annotations

import platform
from importlib import metadata


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("yolo_prune", "torch", "torchvision", "ultralytics", "onnx", "onnxruntime-gpu", "onnxruntime",
                "pycocotools", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out
