"""Conv2d handlers: dense, depthwise and grouped convolutions, and our CompensatedConv2d."""
from __future__ import annotations

import math

from torch import nn

from .base import ChannelFlow, LayerHandler, copy_kept, kept, register
from .modules import CompensatedConv2d, resized_conv
from .roles import Role


def _is_depthwise(m: nn.Conv2d) -> bool:
    return m.groups > 1 and m.groups == m.in_channels == m.out_channels


class ConvHandler(LayerHandler):
    """What every Conv2d variant shares: the aten op, widths, spec record, rebuild and the spatial bookkeeping."""
    kind = "Conv2d"
    ops = frozenset({"convolution"})
    computes = True

    def trace_keys(self, m):
        return {m.weight.data_ptr(): False} if m.weight is not None else {}

    def channel_flow(self, m, x, args):
        if bool(args[6]):  # a Conv2d's weight in a transposed call: we cannot follow it
            return ChannelFlow(fixed=f"grouped/transposed conv (groups={int(args[8])})")
        return self.flow(m)

    def flow(self, m) -> ChannelFlow:
        raise NotImplementedError

    def note_call(self, tracer, name, m, args, x, y):
        info = tracer.call_info(name)
        info.out_hw, info.kernel, info.groups = tuple(y.shape[2:]), int(math.prod(args[1].shape[2:])), int(args[8])
        tracer.note_producer(name, y)

    def widths(self, m):
        return m.in_channels, m.out_channels

    def macs(self, m, positions, cin, cout):
        return positions * math.prod(m.kernel_size) * (cin // m.groups) * cout

    def record(self, m):
        return {"type": self.kind, "in": m.in_channels, "out": m.out_channels, "groups": m.groups,
                "bias": m.bias is not None}

    def can_rebuild(self, m):
        return isinstance(m, nn.Conv2d)

    def rebuild(self, m, shape):
        bias = shape.get("bias", m.bias is not None)
        if (m.in_channels, m.out_channels, m.groups, m.bias is not None) == \
                (shape["in"], shape["out"], shape["groups"], bias):
            return None
        return resized_conv(m, shape["in"], shape["out"], shape["groups"], bias)

    def consumes_constants(self, m):
        return m.groups == 1

    def _cut_dense(self, m, keep_out, keep_in):
        ko, ki = kept(keep_out, m.out_channels), kept(keep_in, m.in_channels)
        return copy_kept(resized_conv(m, len(ki), len(ko), 1), m, ko, ki)


@register(nn.Conv2d)
class DepthwiseConvHandler(ConvHandler):
    """groups == in == out: output channel j is input channel j, so a channel goes from both sides at once."""

    def accepts(self, m):
        return _is_depthwise(m)

    def flow(self, m):
        return ChannelFlow(in_role=Role.DW)

    def macs(self, m, positions, cin, cout):
        return positions * math.prod(m.kernel_size) * cout  # groups shrink with the channels

    def cut(self, m, keep_out, keep_in):
        keep = keep_out if keep_out is not None else keep_in
        return copy_kept(resized_conv(m, len(keep), len(keep), len(keep)), m, keep)


@register(nn.Conv2d)
class GroupedConvHandler(ConvHandler):
    """1 < groups, not depthwise: filters see only their group, so the engine keeps every channel."""

    def accepts(self, m):
        return m.groups > 1

    def flow(self, m):
        return ChannelFlow(fixed=f"grouped/transposed conv (groups={m.groups})")

    def cut(self, m, keep_out, keep_in):
        raise ValueError(f"grouped conv (groups={m.groups}) cannot lose channels")


@register(nn.Conv2d)
class DenseConvHandler(ConvHandler):
    """groups == 1: inputs are consumed (a slice of every filter), outputs are fresh channels (whole filters)."""

    def flow(self, m):
        return ChannelFlow(in_role=Role.IN, out_role=Role.OUT)

    def cut(self, m, keep_out, keep_in):
        return self._cut_dense(m, keep_out, keep_in)


@register(CompensatedConv2d)
class CompensatedConvHandler(DenseConvHandler):
    """A dense conv plus its border term: the term is per output channel, so it follows the outputs.

    Only dense convs are ever compensated (``ConvHandler.consumes_constants``); a grouped one keeps its channels.
    """
    kind = "CompensatedConv2d"

    def trace_keys(self, m):
        return {**super().trace_keys(m), m.compensation.data_ptr(): True}

    def flow(self, m):
        if m.groups > 1:
            return ChannelFlow(fixed=f"compensated grouped conv (groups={m.groups})")
        return super().flow(m)

    def rebuild(self, m, shape):
        if not isinstance(m, CompensatedConv2d):
            m = CompensatedConv2d.from_conv(m)
        return super().rebuild(m, shape) or m

    def cut(self, m, keep_out, keep_in):
        new = self._cut_dense(m, keep_out, keep_in)
        new.compensation.copy_(m.compensation if keep_out is None else m.compensation[keep_out])
        return new
