"""Check the engine on any model: make some channels constant, prune exactly those, compare outputs."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..graph import trace
from ..layers import Role
from .api import output_difference, prune_model


def make_channels_constant(model: nn.Module, frac: float = 0.3, zero_beta: bool = False, seed: int = 0,
                           imgsz: int = 64) -> int:
    """Set γ = 0 for a random ``frac`` of every group's channels (zero filters of producers without a BN), so
    those channels output a constant act(β). Returns how many channels were touched."""
    graph = trace(model, imgsz=imgsz)
    rng = np.random.default_rng(seed)
    mods = dict(model.named_modules())
    touched = 0
    with torch.no_grad():
        for g in graph.groups:
            for k in rng.choice(g.width, int(frac * g.width), replace=False):
                touched += 1
                bns = {s.module for s in g.channels[k] if s.role is Role.BN}
                for s in g.channels[k]:
                    m = mods[s.module]
                    no_bn_behind = s.role.produces and graph.conv_info[s.module].bn not in bns
                    if s.role is Role.BN or no_bn_behind:
                        m.weight[s.index] = 0
                        if zero_beta and m.bias is not None:
                            m.bias[s.index] = 0
    return touched


def relative_difference(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Max |Δ| / max |ref|; for detector outputs (B, N, 4 + nc) boxes and scores are measured apart."""
    if reference.dim() == 3 and reference.shape[-1] > 4:
        return max(output_difference(reference[..., :4], other[..., :4])["max_rel_diff"],
                   output_difference(reference[..., 4:], other[..., 4:])["max_rel_diff"])
    return output_difference(reference, other)["max_rel_diff"]


def constant_channel_check(model: nn.Module, compensate: str = "exact", zero_beta: bool = False, frac: float = 0.3,
                           seed: int = 0, example: torch.Tensor | None = None) -> dict:
    """Prune a copy of ``model`` whose ``frac`` channels were made constant; report the output difference."""
    model = copy.deepcopy(model).eval()
    make_channels_constant(model, frac, zero_beta, seed)
    reference = copy.deepcopy(model)
    rep = prune_model(model, threshold=1e-12, round_to=1, min_keep=0.0, compensate=compensate, imgsz=64,
                      verify=False)
    x = example if example is not None else torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        diff = relative_difference(reference(x), model(x))
    return {"max_rel_diff": diff, "removed_channels": rep["removed_channels"], "macs_ratio": rep["macs_ratio"]}
