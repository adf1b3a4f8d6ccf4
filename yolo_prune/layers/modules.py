"""Layer classes of our own and shape-changing constructors the handlers build pruned layers with."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class CompensatedConv2d(nn.Conv2d):
    """A Conv2d that also adds the contribution of removed, constant input channels.

    ``compensation`` (out, 1, kh, kw) is Σ_j c_j · w[:, j] over the removed inputs j with constant value c_j.
    Running it over a plane of ones with the conv's own stride/padding reproduces exactly what those channels
    contributed, zero-padded borders included.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("compensation", torch.zeros(self.out_channels, 1, *self.kernel_size,
                                                         device=self.weight.device, dtype=self.weight.dtype))

    @classmethod
    def from_conv(cls, m: nn.Conv2d) -> "CompensatedConv2d":
        new = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                  m.bias is not None, m.padding_mode, device="meta", dtype=m.weight.dtype).to_empty(
                      device=m.weight.device)
        new.weight.data.copy_(m.weight.detach())
        new.weight.requires_grad_(m.weight.requires_grad)
        if m.bias is not None:
            new.bias.data.copy_(m.bias.detach())
            new.bias.requires_grad_(m.bias.requires_grad)
        new.compensation.zero_()
        new.train(m.training)
        return new

    def forward(self, x):
        ones = torch.ones_like(x[:1, :1])
        return super().forward(x) + F.conv2d(ones, self.compensation, None, self.stride, self.padding,
                                             self.dilation)


def _grad_flags(new: nn.Module, m: nn.Module) -> None:
    """Keep the requires_grad flags of ``m`` (a new bias follows the weight's flag)."""
    new.weight.requires_grad_(m.weight.requires_grad)
    if getattr(new, "bias", None) is not None:
        new.bias.requires_grad_(m.weight.requires_grad if m.bias is None else m.bias.requires_grad)


def resized_conv(m: nn.Conv2d, cin: int, cout: int, groups: int, bias: bool | None = None) -> nn.Conv2d:
    bias = m.bias is not None if bias is None else bias
    # built on the meta device: the caller overwrites the weights, so skip the costly random init
    cls = CompensatedConv2d if isinstance(m, CompensatedConv2d) else nn.Conv2d
    new = cls(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, groups, bias,
              m.padding_mode, device="meta", dtype=m.weight.dtype).to_empty(device=m.weight.device)
    _grad_flags(new, m)
    return new


def resized_bn(m: nn.BatchNorm2d, n: int) -> nn.BatchNorm2d:
    ref = m.weight if m.weight is not None else m.running_mean
    new = nn.BatchNorm2d(n, m.eps, m.momentum, m.affine, m.track_running_stats, device=ref.device, dtype=ref.dtype)
    if m.affine:
        new.weight.requires_grad_(m.weight.requires_grad)
        new.bias.requires_grad_(m.bias.requires_grad)
    new.train(m.training)
    return new


def resized_linear(m: nn.Linear, fin: int, fout: int, bias: bool | None = None) -> nn.Linear:
    bias = m.bias is not None if bias is None else bias
    new = nn.Linear(fin, fout, bias, device="meta", dtype=m.weight.dtype).to_empty(device=m.weight.device)
    _grad_flags(new, m)
    return new


def set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


@contextmanager
def kept_modes(*models: nn.Module):
    """Restore every module's own train/eval flag on exit: a caller's model may mix modes (eval with one BN in
    train mode, say), which ``model.train(was_training)`` would flatten."""
    modes = [(m, m.training) for net in models for m in net.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
