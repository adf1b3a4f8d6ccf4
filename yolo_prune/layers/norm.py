"""BatchNorm2d: a per-channel affine map; its γ scores channels and its running_mean absorbs β compensation."""
from __future__ import annotations

from torch import nn

from .base import ChannelFlow, LayerHandler, register
from .modules import resized_bn
from .roles import Role

BATCHNORM_OPS = frozenset({"_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
                           "cudnn_batch_norm", "batch_norm", "_batch_norm_impl_index"})


@register(nn.BatchNorm2d)
class BatchNormHandler(LayerHandler):
    kind = "BatchNorm2d"
    ops = BATCHNORM_OPS

    def trace_keys(self, m):
        return {m.running_mean.data_ptr(): False} if m.running_mean is not None else {}

    def operands(self, op, args):
        return args[0], (args[3] if len(args) > 3 else None)  # (input, running_mean)

    def channel_flow(self, m, x, args):
        return ChannelFlow(in_role=Role.BN)

    def note_call(self, tracer, name, m, args, x, y):
        tracer.note_bn_after(name, x)

    def widths(self, m):
        return m.num_features, m.num_features

    def record(self, m):
        return {"type": self.kind, "num_features": m.num_features}

    def rebuild(self, m, shape):
        return resized_bn(m, shape["num_features"]) if m.num_features != shape["num_features"] else None

    def cut(self, m, keep_out, keep_in):
        keep = keep_out if keep_out is not None else keep_in
        new = resized_bn(m, len(keep))
        if m.affine:
            new.weight.data.copy_(m.weight.detach()[keep])
            new.bias.data.copy_(m.bias.detach()[keep])
        if m.track_running_stats:
            new.running_mean.copy_(m.running_mean[keep])
            new.running_var.copy_(m.running_var[keep])
            new.num_batches_tracked.copy_(m.num_batches_tracked)
        return new

    def absorbs_shift(self, m):
        return m.running_mean is not None

    def fold_shift(self, m, delta):
        m.running_mean.sub_(delta)  # y = γ (x + δ - (μ + δ)) / σ + β: the same output
