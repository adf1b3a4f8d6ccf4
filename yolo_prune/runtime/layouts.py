"""The ONNX output layouts as a runtime reads them: their names, what ``output0`` holds in each, and ``to_ours``.

* ``ours``        (B, N, 4 + nc): cx, cy, w, h in input pixels, then class scores 0..1 (objectness multiplied in).
                  Exactly the Detector's eval output.
* ``ultralytics`` (B, 4 + nc, N): the same numbers transposed, what ``yolo export format=onnx`` writes.
* ``yolov5``      (B, N, 5 + nc): cx, cy, w, h, objectness, then class probabilities (not multiplied), what the
                  yolov5 repo's ``export.py`` writes. Anchor heads with objectness only (legacy yolov5).

``to_ours`` turns any of them back into ours, which is how ``OrtDetector`` (and so the evaluator and the
benchmark) read every layout. Choosing and writing a layout is the exporter's side (``export/layouts.py``).
"""
from __future__ import annotations

import numpy as np
import torch

LAYOUTS = ("ours", "ultralytics", "yolov5")
DESCRIPTIONS = {
    "ours": "(batch, boxes, 4+nc): cx, cy, w, h in input pixels, then class scores 0..1",
    "ultralytics": "(batch, 4+nc, boxes): cx, cy, w, h in input pixels, then class scores 0..1 (ultralytics)",
    "yolov5": "(batch, boxes, 5+nc): cx, cy, w, h in input pixels, objectness, then class probabilities (yolov5)",
}


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
