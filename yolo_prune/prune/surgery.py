"""Physical removal of channels: one small handler per layer type, looked up through a registry."""
from __future__ import annotations

import torch
from torch import nn

from ..models.spec import CompensatedConv2d, fix_module_attributes, resized_bn, resized_conv, resized_linear, set_module


class ConvSurgeon:
    def apply(self, m: nn.Conv2d, keep_out: torch.Tensor | None, keep_in: torch.Tensor | None) -> nn.Conv2d:
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        w = m.weight.detach()
        if depthwise:  # in and out are the same channels
            keep = keep_out if keep_out is not None else keep_in
            new = resized_conv(m, len(keep), len(keep), len(keep))
            new.weight.data.copy_(w[keep])
            if m.bias is not None:
                new.bias.data.copy_(m.bias.detach()[keep])
            if isinstance(m, CompensatedConv2d):
                new.compensation.copy_(m.compensation[keep])
            return new
        if m.groups > 1:
            raise ValueError(f"grouped conv (groups={m.groups}) cannot lose channels")
        ko = keep_out if keep_out is not None else torch.arange(m.out_channels)
        ki = keep_in if keep_in is not None else torch.arange(m.in_channels)
        new = resized_conv(m, len(ki), len(ko), 1)
        new.weight.data.copy_(w[ko][:, ki])
        if m.bias is not None:
            new.bias.data.copy_(m.bias.detach()[ko])
        if isinstance(m, CompensatedConv2d):
            new.compensation.copy_(m.compensation[ko])
        return new


class BatchNormSurgeon:
    def apply(self, m: nn.BatchNorm2d, keep_out, keep_in) -> nn.BatchNorm2d:
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


class LinearSurgeon:
    def apply(self, m: nn.Linear, keep_out, keep_in) -> nn.Linear:
        ko = keep_out if keep_out is not None else torch.arange(m.out_features)
        ki = keep_in if keep_in is not None else torch.arange(m.in_features)
        new = resized_linear(m, len(ki), len(ko))
        new.weight.data.copy_(m.weight.detach()[ko][:, ki])
        if m.bias is not None:
            new.bias.data.copy_(m.bias.detach()[ko])
        return new


SURGEONS = {nn.Conv2d: ConvSurgeon(), nn.BatchNorm2d: BatchNormSurgeon(), nn.Linear: LinearSurgeon()}


def surgeon_for(module: nn.Module):
    for cls in type(module).__mro__:
        if cls in SURGEONS:
            return SURGEONS[cls]
    raise TypeError(f"no pruning handler registered for layer type {type(module).__name__}")


def removal_sets(graph, plan) -> tuple[dict, dict]:
    """Per layer: the out-side and in-side indices to drop."""
    rm_out: dict[str, set] = {}
    rm_in: dict[str, set] = {}
    for g in graph.groups:
        for k in plan.remove.get(g.gid, ()):
            for s in g.channels[k]:
                if s.role in ("out", "dw", "bn", "lin_out"):
                    rm_out.setdefault(s.module, set()).add(s.index)
                if s.role in ("in", "dw", "lin_in"):
                    rm_in.setdefault(s.module, set()).add(s.index)
    return rm_out, rm_in


def _size(m: nn.Module, side: str) -> int:
    if isinstance(m, nn.Conv2d):
        return m.out_channels if side == "out" else m.in_channels
    if isinstance(m, nn.BatchNorm2d):
        return m.num_features
    return m.out_features if side == "out" else m.in_features


def apply_plan(model: nn.Module, graph, plan) -> None:
    """Replace every affected layer with a smaller one holding the kept weights."""
    rm_out, rm_in = removal_sets(graph, plan)
    modules = dict(model.named_modules())
    for name in sorted(set(rm_out) | set(rm_in)):
        m = modules[name]

        def keep(side, removed):
            if not removed:
                return None
            return torch.tensor([i for i in range(_size(m, side)) if i not in removed], dtype=torch.long,
                                device=(m.weight if getattr(m, "weight", None) is not None else m.running_mean).device)
        new = surgeon_for(m).apply(m, keep("out", rm_out.get(name)), keep("in", rm_in.get(name)))
        set_module(model, name, new)
    fix_module_attributes(model)
