"""Tiny detectors for the export and benchmark tests (a fraction of a second per export)."""
import torch
from torch import nn

from yolo_prune.models.detector import Detector


# ------------------------------------------------------------------------------------------------ a tiny model
class TinyNet(nn.Module):
    def __init__(self, nc: int, extra_op: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4 + nc, 1, 4)
        self.extra_op = extra_op

    def forward(self, x):
        y = self.head(nn.functional.silu(self.bn(self.conv(x))))
        if self.extra_op == "triu":  # ONNX Trilu exists from opset 14 only
            y = y + torch.triu(torch.ones_like(y))
        if self.extra_op == "numpy":  # leaves torch: the tracer can only freeze it
            y = torch.from_numpy(y.detach().numpy().copy())
        return y


class TinyDetector(Detector):
    """Stride-8 anchor-free toy head: enough graph to exercise export mechanics in a fraction of a second."""
    family = "test"
    head_type = "anchor_free"

    def decode(self, raw):
        b, c, h, w = raw.shape
        gy, gx = torch.meshgrid(torch.arange(h, dtype=raw.dtype), torch.arange(w, dtype=raw.dtype), indexing="ij")
        xy = (raw[:, :2].sigmoid() + torch.stack([gx, gy])) * 8
        wh = raw[:, 2:4].exp() * 8
        return torch.cat([xy, wh, raw[:, 4:].sigmoid()], 1).flatten(2).transpose(1, 2)

    def head_modules(self):
        return ["model.head"]


def tiny(extra_op=None, nc=2):
    return TinyDetector(TinyNet(nc, extra_op), {i: f"class{i}" for i in range(nc)}, [8]).eval()


def randomize_bn(det):
    """Random BN statistics so that outputs depend on the input (fresh yaml models are nearly constant)."""
    g = torch.Generator().manual_seed(1)
    for m in det.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.2
            m.running_mean = torch.randn(n, generator=g) * 0.2
            m.running_var = torch.rand(n, generator=g) + 0.5
    return det
