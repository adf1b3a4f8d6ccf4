"""ONNX output layouts: ours, ultralytics' and the yolov5 repo's, so deployment code written for either reads ours.

* ``ours``        (B, N, 4 + nc): cx, cy, w, h in input pixels, then class scores 0..1 (objectness multiplied in).
                  Exactly the Detector's eval output.
* ``ultralytics`` (B, 4 + nc, N): the same numbers transposed, what ``yolo export format=onnx`` writes.
* ``yolov5``      (B, N, 5 + nc): cx, cy, w, h, objectness, then class probabilities (not multiplied), what the
                  yolov5 repo's ``export.py`` writes. Anchor heads with objectness only (legacy yolov5).

The default is the family's own convention (``default_layout``). The export records the layout in the ONNX
metadata (``layout``) and in the sidecar json; ``to_ours`` turns any of them back into ours, which is how
``OrtDetector`` (and so the evaluator and the benchmark) read every layout.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

LAYOUTS = ("ours", "ultralytics", "yolov5")
DESCRIPTIONS = {
    "ours": "(batch, boxes, 4+nc): cx, cy, w, h in input pixels, then class scores 0..1",
    "ultralytics": "(batch, 4+nc, boxes): cx, cy, w, h in input pixels, then class scores 0..1 (ultralytics)",
    "yolov5": "(batch, boxes, 5+nc): cx, cy, w, h in input pixels, objectness, then class probabilities (yolov5)",
}
_FAMILY_DEFAULT = {"ultralytics": "ultralytics", "yolov5": "yolov5"}


def default_layout(family: str) -> str:
    return _FAMILY_DEFAULT.get(str(family), "ours")


def check_layout(layout: str | None, det) -> str:
    """The layout to export (``None``: the family's own), or a one-line error naming what is possible."""
    family = getattr(det, "family", "")
    layout = default_layout(family) if layout is None else str(layout)
    if layout not in LAYOUTS:
        raise ValueError(f"--layout: expected one of {', '.join(LAYOUTS)}, found {layout!r}")
    if layout == "yolov5" and family != "yolov5":
        raise ValueError(f"--layout yolov5 needs a legacy yolov5 model (separate objectness); this is a {family!r} "
                         "model: use --layout ours or ultralytics")
    return layout


class LayoutModel(nn.Module):
    """The Detector with its eval output in ``layout``."""

    def __init__(self, detector: nn.Module, layout: str):
        super().__init__()
        self.detector, self.layout = detector, layout

    def forward(self, x):
        if self.layout == "ultralytics":
            return self.detector(x).transpose(1, 2)
        if self.layout == "yolov5":
            return _yolov5_output(self.detector, x)
        return self.detector(x)


def _yolov5_output(det, x):
    """yolov5 export output from the raw head: sigmoid, grid/anchor decode, obj and cls kept apart."""
    from ..models.yolov5_legacy import decode_v5

    head = det.model.model[-1]
    anchors_px = [head.anchors[i] * head.stride[i] for i in range(len(head.anchors))]
    return decode_v5(det.model(x), anchors_px, det.strides, keep_objectness=True)


def to_ours(y, layout: str):
    """Any layout's output (numpy array or tensor) -> ours (B, N, 4 + nc)."""
    if layout == "ours" or not layout:
        return y
    if layout == "ultralytics":
        return y.transpose(0, 2, 1) if isinstance(y, np.ndarray) else y.transpose(1, 2)
    if layout == "yolov5":
        scores = y[..., 5:] * y[..., 4:5]
        return np.concatenate([y[..., :4], scores], -1) if isinstance(y, np.ndarray) else \
            torch.cat([y[..., :4], scores], -1)
    raise ValueError(f"unknown ONNX output layout {layout!r} (expected one of {', '.join(LAYOUTS)})")
