"""Channel importance criteria: one ``Criterion`` class each, in a registry (``register_criterion``); each gives one
score per channel position of a group (higher = keep)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..graph import Group
from ..layers import Role

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
    Schur complement. Costs are divided by each consumer's output energy (the planner then divides by the group
    mean); the k-th removed position scores the running maximum of the marginal costs, so sorting reproduces the greedy order.
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


class Criterion:
    """One importance criterion: ``scores(group, modules, rng, stats)`` gives one score per position (higher =
    keep). Subclass it, set the flags, decorate with ``@register_criterion``: the planner, ``prune_model`` and the
    CLI choices (``criterion_names()``) pick it up.

    * ``relative``: scores of different layers differ in scale, so the global ranking compares each score to its
      group's mean (False for |γ|, whose scale sparsity training made comparable, and for relative errors);
    * ``needs_gradients``: the caller's ``grad_fn(model)`` must populate gradients first (taylor);
    * ``needs_calibration``: reads input statistics of unlabeled images (``stats``; recon)."""
    name = ""
    relative = True
    needs_gradients = False
    needs_calibration = False

    def scores(self, group: Group, modules: dict, rng: np.random.Generator, stats: dict | None) -> np.ndarray:
        raise NotImplementedError

    def statistics(self, model: nn.Module, graph, images: torch.Tensor, positions: int, seed: int) -> dict:
        """What ``scores`` reads as ``stats`` when ``needs_calibration``: the input statistics of every layer with
        prunable inputs on the calibration ``images`` (a criterion measuring something else overrides this)."""
        from .reconstruct import input_statistics
        return input_statistics(model, graph, images, positions, seed)


_CRITERIA: dict[str, Criterion] = {}


def register_criterion(cls):
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a criterion needs a name")
    _CRITERIA[cls.name] = cls()
    return cls


def criterion_names() -> tuple:
    return tuple(_CRITERIA)


def get_criterion(name) -> Criterion:
    crit = _CRITERIA.get(name) if isinstance(name, str) else None
    if crit is None:
        raise ValueError(f"criterion: expected one of {', '.join(_CRITERIA)}, found {name!r}")
    return crit


def group_scores(group: Group, modules: dict, criterion: str, rng: np.random.Generator | None = None,
                 stats: dict | None = None) -> np.ndarray:
    return get_criterion(criterion).scores(group, modules, rng or np.random.default_rng(0), stats)


@register_criterion
class BnGamma(Criterion):
    """Mean |γ| of the position's BN channels; a group without BN (a bias-only conv) falls back to the L2 norm."""
    name, relative = "bn", False

    def scores(self, group, modules, rng, stats):
        if not any(s.role is Role.BN for s in group.channels[0]):
            return _CRITERIA["l2"].scores(group, modules, rng, stats)
        return np.array([np.mean([abs(float(modules[s.module].weight.detach()[s.index])) for s in ch
                                  if s.role is Role.BN]) for ch in group.channels])


class _Norm(Criterion):
    p = 2

    def scores(self, group, modules, rng, stats):
        return np.array([sum(float(_weight_rows(modules[s.module], s.role, s.index).norm(self.p))
                             for s in ch if s.role in PRODUCER_ROLES) for ch in group.channels])


@register_criterion
class L1(_Norm):
    """Sum of the L1 norms of the filters the position produces."""
    name, p = "l1", 1


@register_criterion
class L2(_Norm):
    """Sum of the L2 norms of the filters the position produces."""
    name, p = "l2", 2


@register_criterion
class Fpgm(Criterion):
    """Geometric median (FPGM): a filter close to all others is redundant; score = summed distance to them."""
    name = "fpgm"

    def scores(self, group, modules, rng, stats):
        scores = np.zeros(group.width)
        producers = sorted({(s.module, s.role) for s in group.channels[0] if s.role in PRODUCER_ROLES})
        for mod, role in producers:
            # every position may own several rows of this layer (split copies): stack them per position
            rows = [torch.cat([_weight_rows(modules[s.module], s.role, s.index) for s in ch
                               if s.module == mod and s.role == role]) for ch in group.channels]
            mat = torch.stack(rows).float()
            scores += torch.cdist(mat, mat).sum(1).numpy()
        return scores


@register_criterion
class Taylor(Criterion):
    """First-order Taylor: |w * dL/dw| summed over every slice the position owns (gradients from the caller)."""
    name, needs_gradients = "taylor", True

    def scores(self, group, modules, rng, stats):
        scores = np.zeros(group.width)
        for k, ch in enumerate(group.channels):
            scores[k] = sum(_taylor_slot(modules[s.module], s) for s in ch)
        return scores


def _taylor_slot(m: nn.Module, s) -> float:
    if s.role.is_norm:
        return sum(float((p.detach()[s.index] * p.grad[s.index]).abs()) for p in (m.weight, m.bias)
                   if p is not None and p.grad is not None)
    if m.weight.grad is None:
        return 0.0
    g = m.weight.grad[s.index] if s.role in PRODUCER_ROLES else m.weight.grad[:, s.index]
    return float((_weight_rows(m, s.role, s.index) * g.reshape(-1)).abs().sum())


@register_criterion
class Random(Criterion):
    """Uniform random scores (the baseline every criterion should beat)."""
    name = "random"

    def scores(self, group, modules, rng, stats):
        return rng.random(group.width)


@register_criterion
class Recon(Criterion):
    """Greedy OBS on calibration statistics (``recon_scores``), ranked across groups relative to each group's mean
    like the weight criteria: the consumers' relative output errors alone are not comparable between layers (raw,
    the cut piled into the few groups whose consumers look most redundant: yolov5n, coco128 val at 320 with
    reconstruct, 0.106 / 0.068 mAP50-95 at 0.9x / 0.8x MACs; group-normalised 0.127 / 0.096; l2: 0.205 / 0.162).
    Its choice inside a group is no better than chance either: with l2's allocation and this order inside each
    group, the cut scores like a random order (benchmarks/selection_experiment.py), though the consumers' refit
    error it minimises is half of l2's: that error is not what the detections lose."""
    name, relative, needs_calibration = "recon", True, True

    def scores(self, group, modules, rng, stats):
        if stats is None:
            raise ValueError("criterion recon needs input statistics of calibration images (pass --calib)")
        return recon_scores(group, modules, stats)


CRITERIA = criterion_names()  # the built-in criteria (the CLI asks criterion_names(), which sees later ones too)
NEEDS_CALIBRATION = tuple(n for n, c in _CRITERIA.items() if c.needs_calibration)
