"""GroupNorm: channels are normalised together within each group, so a group is removed whole.

Removing whole groups (and lowering ``num_groups``) leaves every kept channel's statistics untouched, so the
pruned layer is exactly the original on the kept channels, and a removed group whose channels are constant
folds into its consumers like any constant channel. The alternative, keeping ``num_groups`` and taking channels
out of every group (Torch-Pruning's choice), changes the statistics of every kept channel. In the trace the
channels of one group are coupled (one position of the dependency group owns all ``C / G`` of them), so the
planner, MACs model and surgery need nothing GroupNorm-specific; ``round_to`` and ``min_keep`` then count groups.
A GroupNorm without affine weights has no parameter to be recognised by and keeps its channels.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import ChannelFlow, LayerHandler, register
from .roles import Role


def resized_group_norm(m: nn.GroupNorm, groups: int, channels: int) -> nn.GroupNorm:
    ref = m.weight
    new = nn.GroupNorm(groups, channels, m.eps, m.affine, device=None if ref is None else ref.device,
                       dtype=None if ref is None else ref.dtype)
    if m.affine:
        new.weight.requires_grad_(m.weight.requires_grad)
        new.bias.requires_grad_(m.bias.requires_grad)
    new.train(m.training)
    return new


def _whole_groups(keep: torch.Tensor, size: int) -> bool:
    """``keep`` lists complete, ordered groups of ``size`` consecutive channels."""
    if len(keep) % size:
        return False
    blocks = keep.view(-1, size)
    offsets = torch.arange(size, device=keep.device)
    return bool((blocks[:, 0] % size == 0).all() and (blocks - blocks[:, :1] == offsets).all())


@register(nn.GroupNorm)
class GroupNormHandler(LayerHandler):
    kind = "GroupNorm"
    ops = frozenset({"native_group_norm"})  # operands: (input, weight, ...)

    def trace_keys(self, m):
        return {m.weight.data_ptr(): False} if m.weight is not None else {}

    def channel_flow(self, m, x, args):
        return ChannelFlow(in_role=Role.GN, block=m.num_channels // m.num_groups)

    def widths(self, m):
        return m.num_channels, m.num_channels

    def record(self, m):
        return {"type": self.kind, "num_groups": m.num_groups, "num_channels": m.num_channels}

    def rebuild(self, m, shape):
        want = (shape["num_groups"], shape["num_channels"])
        if not (isinstance(want[0], int) and isinstance(want[1], int) and 0 < want[0] <= want[1]
                and want[1] % want[0] == 0):
            raise ValueError(f"expected num_groups dividing num_channels, found {want[0]} and {want[1]}")
        return resized_group_norm(m, *want) if (m.num_groups, m.num_channels) != want else None

    def cut(self, m, keep_out, keep_in):
        keep = keep_out if keep_out is not None else keep_in
        size = m.num_channels // m.num_groups
        if not _whole_groups(keep, size):
            raise ValueError(f"GroupNorm({m.num_groups}, {m.num_channels}) can only lose whole groups of {size} "
                             f"channels, asked to keep {keep.tolist()}")
        new = resized_group_norm(m, len(keep) // size, len(keep))
        if m.affine:
            new.weight.data.copy_(m.weight.detach()[keep])
            new.bias.data.copy_(m.bias.detach()[keep])
        return new
