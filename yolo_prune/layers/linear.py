"""nn.Linear: features on the last dim; followed through the trace only on 2-D inputs (after a flatten)."""
from __future__ import annotations

from torch import nn

from .base import ChannelFlow, LayerHandler, copy_kept, kept, register
from .modules import resized_linear
from .roles import Role


@register(nn.Linear)
class LinearHandler(LayerHandler):
    kind = "Linear"
    ops = frozenset({"addmm", "mm", "linear"})
    computes = True

    def trace_keys(self, m):
        return {m.weight.data_ptr(): False} if m.weight is not None else {}

    def operands(self, op, args):
        return (args[1], args[2]) if op == "addmm" else (args[0], args[1])  # addmm(bias, x, w.t())

    def channel_flow(self, m, x, args):
        why = None if x.dim() == 2 else f"linear on a {x.dim()}-D input"
        return ChannelFlow(in_role=Role.LIN_IN, out_role=Role.LIN_OUT, input_fixed=why)

    def note_call(self, tracer, name, m, args, x, y):
        tracer.call_info(name)

    def widths(self, m):
        return m.in_features, m.out_features

    def macs(self, m, positions, cin, cout):
        return positions * cin * cout

    def record(self, m):
        return {"type": self.kind, "in": m.in_features, "out": m.out_features, "bias": m.bias is not None}

    def rebuild(self, m, shape):
        bias = shape.get("bias", m.bias is not None)
        if (m.in_features, m.out_features, m.bias is not None) == (shape["in"], shape["out"], bias):
            return None
        return resized_linear(m, shape["in"], shape["out"], bias)

    def cut(self, m, keep_out, keep_in):
        ko, ki = kept(keep_out, m.out_features), kept(keep_in, m.in_features)
        return copy_kept(resized_linear(m, len(ki), len(ko)), m, ko, ki)

    def consumes_constants(self, m):
        return True
