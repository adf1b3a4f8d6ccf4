"""Versions of the packages a result depends on (recorded in checkpoints, reports, exports and benchmarks).

The one place that asks for them: ``versions()`` (every package we record) or ``versions(names)`` (a few).
"""
from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("yolo_prune", "torch", "torchvision", "ultralytics", "onnx", "onnxruntime-gpu", "onnxruntime",
            "pycocotools", "numpy")
# a name whose distribution may be installed under another one (the GPU build of onnxruntime)
_ALTERNATIVES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu")}


def _version(name: str) -> str | None:
    if name == "torch":  # torch's own string carries the build (e.g. +cu130), which timings depend on
        import torch
        return str(torch.__version__)  # a TorchVersion (str subclass) would pickle as a class
    for dist in _ALTERNATIVES.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions(packages=PACKAGES) -> dict:
    """{"python": ..., package: version} for the installed ones among ``packages``."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        v = _version(pkg)
        if v is not None:
            out[pkg] = v
    return out
