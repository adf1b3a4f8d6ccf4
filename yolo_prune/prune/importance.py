"""Channel importance criteria. Each returns one score per channel position of a group (higher = keep)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..graph import Group
from ..layers import Role

CRITERIA = ("bn", "l1", "l2", "fpgm", "taylor", "random", "recon")
NEEDS_CALIBRATION = ("recon",)  # criteria that read input statistics of unlabeled images (``stats``)
PRODUCER_ROLES = tuple(r for r in Role if r.produces)


def _weight_rows(module: nn.Module, role: str, index: int) -> torch.Tensor:
    """The weight slice a slot owns, flattened."""
    w = module.weight.detach()
    if role in PRODUCER_ROLES:
        return w[index].reshape(-1)
    return w[:, index].reshape(-1)


def recon_scores(group: Group, modules: dict, stats: dict, ridge: float = 1e-3, steps: int = 32) -> np.ndarray:
    """Greedy OBS over the group's positions: the relative output error the consumers cannot win back by a
    least-squares refit of their other inputs, as channels are removed one by one (cheapest first).

    For a consumer with input covariance C (centred: the refit's bias absorbs means) and H = (C + λI)^-1, removing
    input j with the optimal refit of the rest costs ||W[:, j]||² / H[j, j] (exact for 1×1 convs and linear layers;
    k×k kernels share the channel covariance over taps), and updates W -= W[:, j] H[j, :] / H[j, j] and H by its
    Schur complement. Costs are divided by each consumer's output energy, so scores compare across groups; the
    k-th removed position scores the running maximum of the marginal costs, so sorting reproduces the greedy order.
    Wide groups remove ceil(width / ``steps``) positions per greedy step (the cheapest ones), which bounds the time.
    """
    n = group.width
    slots = {}  # consumer -> per position, its input indices
    for k, ch in enumerate(group.channels):
        for s in ch:
            if s.role in ("in", "lin_in") and s.module in stats:
                slots.setdefault(s.module, [[] for _ in range(n)])[k].append(s.index)
    if not slots:  # nothing measured consumes this group (e.g. only a depthwise chain): filter norm
        return group_scores(group, modules, "l2")
    state = {}
    for mod, per_pos in slots.items():
        cov = stats[mod][0]
        w = modules[mod].weight.detach().double().cpu().numpy()
        w = w.reshape(w.shape[0], w.shape[1], -1)  # (out, in, taps)
        lam = ridge * np.trace(cov) / len(cov) + 1e-12
        h = np.linalg.inv(cov + lam * np.eye(len(cov)))
        wt = np.ascontiguousarray(w.transpose(2, 0, 1))  # (taps, out, in)
        energy = float(((wt @ cov) * wt).sum()) + 1e-12  # Σ_taps tr(W_t C W_tᵀ): the output's variance
        pos = np.array([k for k, js in enumerate(per_pos) for _ in js], dtype=np.int64)
        idx = np.array([j for js in per_pos for j in js], dtype=np.int64)
        state[mod] = [w, h, energy, per_pos, pos, idx]
    alive = np.ones(n, dtype=bool)
    scores = np.zeros(n)
    running = 0.0
    per_step = max(1, -(-n // steps))
    while alive.any():
        cost = np.zeros(n)
        for w, h, energy, _, pos, idx in state.values():
            col = (w[:, idx] ** 2).sum(axis=(0, 2))
            np.add.at(cost, pos, col / np.maximum(np.diagonal(h)[idx], 1e-30) / energy)
        cost[~alive] = np.inf
        chosen = np.argsort(cost, kind="stable")[:min(per_step, int(alive.sum()))]
        for best in chosen:
            running = max(running, float(cost[best]))
            scores[best] = running
            alive[best] = False
        for st in state.values():  # block OBS: remove the chosen inputs S together, refit the rest
            w, h, _, per_pos = st[:4]
            sel = np.array(sorted({j for best in chosen for j in per_pos[best]}), dtype=np.int64)
            if not len(sel):
                continue
            hss = h[np.ix_(sel, sel)]
            if np.abs(hss).max() <= 1e-30:
                continue
            k = np.linalg.pinv(hss) @ h[sel]  # (|S|, C)
            w -= np.matmul(w[:, sel, :].transpose(0, 2, 1), k).transpose(0, 2, 1)  # (out, C, taps)
            h -= h[:, sel] @ k
            w[:, sel] = 0
            h[sel], h[:, sel] = 0, 0
    return scores


def group_scores(group: Group, modules: dict, criterion: str, rng: np.random.Generator | None = None,
                 stats: dict | None = None) -> np.ndarray:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {', '.join(CRITERIA)}, found {criterion!r}")
    n = group.width
    if criterion == "recon":
        if stats is None:
            raise ValueError("criterion recon needs input statistics of calibration images (pass --calib)")
        return recon_scores(group, modules, stats)
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
