"""Channel importance criteria. Each returns one score per channel position of a group (higher = keep)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..graph import Group
from ..layers import Role

CRITERIA = ("bn", "l1", "l2", "fpgm", "taylor", "random")
PRODUCER_ROLES = tuple(r for r in Role if r.produces)


def _weight_rows(module: nn.Module, role: str, index: int) -> torch.Tensor:
    """The weight slice a slot owns, flattened."""
    w = module.weight.detach()
    if role in PRODUCER_ROLES:
        return w[index].reshape(-1)
    return w[:, index].reshape(-1)


def group_scores(group: Group, modules: dict, criterion: str, rng: np.random.Generator | None = None) -> np.ndarray:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {', '.join(CRITERIA)}, found {criterion!r}")
    n = group.width
    if criterion == "random":
        return (rng or np.random.default_rng(0)).random(n)
    if criterion == "bn":
        has_bn = any(s.role is Role.BN for s in group.channels[0])
        if has_bn:
            return np.array([np.mean([abs(float(modules[s.module].weight.detach()[s.index])) for s in ch if s.role is Role.BN])
                             for ch in group.channels])
        criterion = "l2"  # a group without BN (e.g. a bias-only conv) falls back to the filter norm
    if criterion in ("l1", "l2"):
        p = 1 if criterion == "l1" else 2
        return np.array([sum(float(_weight_rows(modules[s.module], s.role, s.index).norm(p))
                             for s in ch if s.role in PRODUCER_ROLES) for ch in group.channels])
    if criterion == "fpgm":
        scores = np.zeros(n)
        producers = sorted({(s.module, s.role) for s in group.channels[0] if s.role in PRODUCER_ROLES})
        for mod, role in producers:
            # every position may own several rows of this layer (split copies): stack them per position
            rows = [torch.cat([_weight_rows(modules[s.module], s.role, s.index) for s in ch
                               if s.module == mod and s.role == role]) for ch in group.channels]
            mat = torch.stack(rows).float()
            scores += torch.cdist(mat, mat).sum(1).numpy()
        return scores
    # taylor: |w * dL/dw| summed over every slice the channel owns; gradients must be populated already
    scores = np.zeros(n)
    for k, ch in enumerate(group.channels):
        total = 0.0
        for s in ch:
            m = modules[s.module]
            if s.role.is_norm:
                for p in (m.weight, m.bias):
                    if p is not None and p.grad is not None:
                        total += float((p.detach()[s.index] * p.grad[s.index]).abs())
                continue
            if m.weight.grad is None:
                continue
            g = m.weight.grad[s.index] if s.role in PRODUCER_ROLES else m.weight.grad[:, s.index]
            total += float((_weight_rows(m, s.role, s.index) * g.reshape(-1)).abs().sum())
        scores[k] = total
    return scores
