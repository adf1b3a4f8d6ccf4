"""Choosing and writing the ONNX output layout: ours, ultralytics' or the yolov5 repo's, so deployment code
written for either reads ours.

The layouts themselves (names, what ``output0`` holds, ``to_ours`` to read any of them back) are the runtime's
(``runtime/layouts.py``). The default is the family's own convention (``default_layout``). The export records
the layout in the ONNX metadata (``layout``) and in the sidecar json.
"""
from __future__ import annotations

from torch import nn

from ..runtime.layouts import LAYOUTS

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
