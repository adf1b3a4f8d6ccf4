"""The one interface every model family is wrapped in."""
from __future__ import annotations

import torch
from torch import nn

from .validate import names_dict  # noqa: F401  (re-exported: the families import it from here)


class Detector(nn.Module):
    """An object detector of any supported family.

    Contract (all families):
      * ``self.model``: the core network (an nn.Module). Pruning operates on ``self`` (names start with ``model.``).
      * ``family``: "ultralytics" | "yolov5" | "darknet".
      * ``head_type``: "anchor_free" (DFL head), "anchor_v5" (yolov5 grid) or "darknet" (yolo layers, scale_x_y).
      * ``names``: {class index: name}; ``nc``; ``strides``: tuple of ints per output level;
        ``anchors``: float tensor (nl, na, 2) in input pixels, or None for anchor-free heads.
      * ``spec``: a plain dict (yaml/json serialisable) that ``yolo_prune.models.build_from_spec`` turns back into
        the same architecture: {"family", "base", "nc", "names", "layers" (per-layer shapes, see spec.py)}.
      * ``forward(x)`` in training mode returns the family's raw head output (what the family loss consumes).
        In eval mode it returns decoded predictions, shape (B, N, 4 + nc): box centre x, centre y, width,
        height in input pixels, then per-class scores in 0..1 (objectness already multiplied in).
      * ``head_modules()``: names of modules whose output channels can never be pruned.
    """

    family: str = ""
    head_type: str = ""
    # {layer: output positions removed} relative to the unpruned model, kept by checkpoints (feature distillation)
    prune_plan: dict | None = None

    def __init__(self, model: nn.Module, names: dict, strides, anchors: torch.Tensor | None = None,
                 spec: dict | None = None):
        super().__init__()
        self.model = model
        self.names = {int(k): str(v) for k, v in dict(names).items()}
        self.strides = tuple(int(s) for s in strides)
        self.anchors = None if anchors is None else torch.as_tensor(anchors, dtype=torch.float32).clone()
        self.spec = spec or {}

    @property
    def nc(self) -> int:
        return len(self.names)

    def forward(self, x: torch.Tensor):
        raw = self.model(x)
        if self.training:
            return raw
        return self.decode(raw)

    def decode(self, raw) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head_modules(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"family={self.family}, head={self.head_type}, nc={self.nc}, strides={self.strides}"
