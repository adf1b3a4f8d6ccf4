"""β compensation: fold the constant output of removed channels into the layers that consume them.

A channel whose BN γ is (near) zero outputs act(β) everywhere. Removing it would drop that constant from every
consumer. We make the removed channels exactly constant (γ := 0, or zero filter weights when there is no BN),
run the example input once, and read what reaches each consumer's removed input positions. Reading values at
the consumers makes every path (activation, concat, add, upsample, maxpool, identity) correct without
modelling it. The constant c of an input position folds into the consumer's output: Σ_taps w · c goes into
the running_mean of the BN right after it (subtracted), or into its bias.

Zero padding of a k×k consumer sees 0, not c, outside the image, so with ``mode="bias"`` the border pixels of
such layers differ by the part of the kernel that falls outside (1×1 convs and linear layers are exact
everywhere). ``mode="exact"`` turns such consumers into ``CompensatedConv2d``, which adds the removed channels'
contribution as a k×k filter run over a plane of ones: exact at every pixel and every input size, for the price
of one single-channel convolution per compensated layer.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import Role, handler_for
from ..layers import kept_modes
from ..models.spec import CompensatedConv2d, set_module
from .surgery import removal_sets

MODES = ("exact", "bias", "reconstruct", "off")  # reconstruct: see reconstruct.py


@torch.no_grad()
def compensation_constants(model: nn.Module, graph, plan, example: torch.Tensor) -> dict:
    """{consumer name: {input index: constant}} for every removed input position of a conv/linear."""
    modules = dict(model.named_modules())
    saved = []

    def zero(param, index):
        saved.append((param, index, param.data[index].clone()))
        param.data[index] = 0

    for g in graph.groups:
        for k in plan.remove.get(g.gid, ()):
            slots = g.channels[k]
            bns = {s.module for s in slots if s.role is Role.BN}
            for s in slots:
                if s.role is Role.BN:
                    zero(modules[s.module].weight, s.index)
                elif s.role.produces:
                    info = graph.conv_info.get(s.module)
                    if info is None or info.bn not in bns:  # no BN behind it: keep only the bias
                        zero(modules[s.module].weight, s.index)
    _, rm_in = removal_sets(graph, plan)
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in rm_in:
        m = modules[name]
        if handler_for(m) is not None and handler_for(m).consumes_constants(m):
            def hook(mod, inp, name=name):
                x = inp[0]
                dims = [d for d in range(x.dim()) if d != 1]
                captured[name] = x.mean(dim=dims) if dims else x
            handles.append(m.register_forward_pre_hook(hook))
    try:
        with kept_modes(model):
            model.eval()
            model(example)
    finally:
        for h in handles:
            h.remove()
        for w, i, v in saved:
            w.data[i] = v
    return {name: {i: float(captured[name][i]) for i in sorted(idx)}
            for name, idx in rm_in.items() if name in captured}


def _pads(m: nn.Conv2d) -> bool:
    pad = m.padding if not isinstance(m.padding, str) else (0 if m.padding == "valid" else 1,)
    return any(p > 0 for p in pad) and any(k > 1 for k in m.kernel_size)


@torch.no_grad()
def fold_constants(model: nn.Module, graph, constants: dict, mode: str = "bias") -> None:
    """Add each removed input's constant contribution to the consumer's bias (or the next BN's mean).

    ``mode="exact"``: zero-padded k×k consumers get a ``CompensatedConv2d`` instead (exact at the borders).
    """
    if mode not in ("exact", "bias"):
        raise ValueError(f"compensate: expected one of {MODES}, found {mode!r}")
    modules = dict(model.named_modules())
    for name, consts in constants.items():
        m = modules[name]
        idx = torch.tensor(list(consts), dtype=torch.long, device=m.weight.device)
        c = torch.tensor(list(consts.values()), dtype=m.weight.dtype, device=m.weight.device)
        if isinstance(m, nn.Conv2d):
            kernel = (m.weight.detach()[:, idx] * c[None, :, None, None]).sum(1, keepdim=True)  # (out, 1, kh, kw)
            if mode == "exact" and (_pads(m) or isinstance(m, CompensatedConv2d)):
                if m.padding_mode != "zeros":
                    raise ValueError(f"{name}: exact compensation needs zero padding, found {m.padding_mode}")
                if not isinstance(m, CompensatedConv2d):
                    new = CompensatedConv2d.from_conv(m)
                    set_module(model, name, new)
                    modules[name] = m = new
                m.compensation.add_(kernel)
                continue
            delta = kernel.sum(dim=(1, 2, 3))
        else:
            delta = (m.weight.detach()[:, idx] * c).sum(1)
        target = graph.fold_bias_target(name)  # a BN right after it takes the shift in its running_mean
        if target is not None:
            handler_for(modules[target]).fold_shift(modules[target], delta)
        elif m.bias is not None:
            m.bias.data.add_(delta)
        else:
            m.bias = nn.Parameter(delta.clone(), requires_grad=m.weight.requires_grad)
