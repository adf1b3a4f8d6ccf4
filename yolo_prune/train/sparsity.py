"""Network slimming: an L1 penalty on BatchNorm γ, its schedule, and the γ statistics users decide the ratio from."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_write
from ..plotting import pyplot  # matplotlib (Agg) is imported when a figure is drawn

THRESHOLDS = (1e-3, 1e-2, 1e-1)


def prunable_bns(detector) -> dict[str, nn.BatchNorm2d]:
    """BatchNorm2d modules whose channels the pruning engine may remove (their γ gets the penalty).

    Taken from the traced dependency graph, so BNs feeding the head outputs or fixed ops are left alone.
    """
    from ..graph import prunable_bn_names

    modules = dict(detector.named_modules())
    return {n: modules[n] for n in prunable_bn_names(detector) if modules[n].affine}


def sr_at(epoch: int, cfg: dict) -> float:
    """The penalty strength for ``epoch`` (0-based): linear warm-up over ``sr_warmup`` epochs, then the schedule."""
    sr, epochs, warmup = float(cfg["sr"]), int(cfg["epochs"]), int(cfg["sr_warmup"])
    if sr <= 0:
        return 0.0
    if epoch < warmup:
        return sr * (epoch + 1) / (warmup + 1)
    span = max(epochs - warmup, 1)
    progress = (epoch - warmup) / span  # 0 at the first full-strength epoch
    if cfg["sr_schedule"] == "linear":
        return sr * (1 - progress)
    if cfg["sr_schedule"] == "cosine":
        return sr * 0.5 * (1 + math.cos(math.pi * progress))
    return sr


class SparsityHook:
    """γ.grad += sr * sign(γ) for every prunable BN (sr from the loop state), the network-slimming subgradient.

    The loop runs it as a ``before_step`` hook (once per optimizer step, after unscaling and gradient clipping, so
    clipping never shrinks the penalty). Used as an ``after_backward`` hook it follows the AMP scale in
    ``state.grad_scale`` and applies once per micro-batch.
    """

    def __init__(self, bns: dict[str, nn.BatchNorm2d]):
        self.bns = list(bns.values())

    def __call__(self, state) -> None:
        sr = float(state.sr)
        if sr <= 0:
            return
        scale = sr * float(state.grad_scale)
        for bn in self.bns:
            w = bn.weight
            if w.grad is None:
                w.grad = torch.zeros_like(w)
            w.grad.add_(torch.sign(w.detach()), alpha=scale)


def gammas(bns: dict[str, nn.BatchNorm2d]) -> torch.Tensor:
    if not bns:
        return torch.zeros(0)
    return torch.cat([bn.weight.detach().abs().float().flatten().cpu() for bn in bns.values()])


def gamma_shares(bns: dict[str, nn.BatchNorm2d]) -> dict[str, float]:
    """Share of |γ| below 1e-3, 1e-2 and 1e-1 over all prunable channels."""
    g = gammas(bns)
    n = max(g.numel(), 1)
    return {f"gamma<{t:g}": float((g < t).sum()) / n for t in THRESHOLDS}


def plot_gamma_hist(start: torch.Tensor, end: torch.Tensor, path, title: str = "") -> Path:
    """Overlaid histograms of |γ| at the start and end of training (log-spaced bins), written atomically."""
    import numpy as np

    plt = pyplot()

    path = Path(path)
    lo = 1e-6
    both = torch.cat([start, end]).clamp(min=lo)
    hi = max(float(both.max()), lo * 10) if both.numel() else 1.0
    bins = np.logspace(math.log10(lo), math.log10(hi * 1.05), 60)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(start.clamp(min=lo).numpy(), bins=bins, alpha=0.55, label=f"start (n={start.numel()})")
    ax.hist(end.clamp(min=lo).numpy(), bins=bins, alpha=0.55, label="end")
    for t in THRESHOLDS:
        ax.axvline(t, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("|BN γ| (values below 1e-6 drawn at 1e-6)")
    ax.set_ylabel("channels")
    ax.set_title(title or "BN γ of prunable channels")
    ax.legend()
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), suffix=".tmp.png")
    finally:
        plt.close(fig)


def targeted_masks(detector, target_macs: float, round_to: int = 16, min_keep: float = 0.1, ignore=(),
                   trace_size: int = 64) -> dict[str, torch.Tensor]:
    """{BN name: bool mask} of the channels that pruning to ``target_macs`` would remove from ``detector`` now.

    The same tracer and planner as ``tools/prune.py`` with its default ranking, |γ| (run on a CPU copy, so training
    state is untouched): pruning later with the same target and round_to picks these channels, whose γ the
    targeted penalty has driven to 0, since zeros rank lowest.
    """
    import copy

    from ..graph import trace
    from ..prune.plan import make_plan, resolve_names
    from ..prune.spec import PruneSpec

    spec = PruneSpec(target_macs=target_macs, round_to=round_to, min_keep=min_keep, ignore=ignore, criterion="bn")
    model = copy.deepcopy(detector).float().cpu()
    names = [n for n, _ in model.named_modules() if n]
    graph = trace(model, imgsz=trace_size, ignore=resolve_names(spec.ignore, names, "target_ignore"))
    plan = make_plan(graph, spec)
    by_gid = {g.gid: g for g in graph.groups}
    modules = dict(model.named_modules())
    masks: dict[str, torch.Tensor] = {}
    for gid, positions in plan.remove.items():
        group = by_gid[gid]
        for k in positions:
            for slot in group.bn_slots(k):
                if slot.module not in masks:
                    masks[slot.module] = torch.zeros(modules[slot.module].num_features, dtype=torch.bool)
                masks[slot.module][slot.index] = True
    return masks


def target_progress(total_step: int, steps_per_epoch: int, cfg: dict) -> float:
    """0 before ``target_start``, then linear to 1 at ``target_zero_at`` of the run (in optimizer batches)."""
    start = int(cfg["target_start"]) * steps_per_epoch
    end = max(float(cfg["target_zero_at"]) * int(cfg["epochs"]) * steps_per_epoch, start + 1)
    return min(max((total_step + 1 - start) / (end - start), 0.0), 1.0)


class TargetedSparsity:
    """Targeted slimming: shrink the γ of the channels a ``target_macs`` cut would remove, to exactly 0.

    Plain L1 pushes every γ a little; with few optimizer steps (small datasets, short runs) nothing reaches 0, so
    the cut still removes live channels. This hook instead re-selects, at each epoch start, the channels the
    pruning planner would remove at ``target_macs`` (lowest |γ| first), and after every optimizer step scales
    their γ by (1 - p_t) / (1 - p_{t-1}), p running linearly from 0 at epoch ``target_start`` to 1 at
    ``target_zero_at`` of the run. Past that point the selected γ are held at 0 (the model and its EMA), so the
    network trains without them and pruning with the same target removes only constant channels, whose β the
    engine folds into the next layer. The schedule depends on the step counter only, so it resumes exactly.
    """

    def __init__(self, bns: dict[str, nn.BatchNorm2d], cfg: dict, steps_per_epoch: int):
        self.bns, self.cfg, self.nb = bns, cfg, max(int(steps_per_epoch), 1)
        self.masks: dict[str, torch.Tensor] = {}
        self.selected = 0
        self.p_last = 0.0  # progress already applied (optimizer steps may span several batches)

    def epoch_start(self, state) -> None:
        self.p_last = target_progress(state.epoch * self.nb - 1, self.nb, self.cfg)
        if state.epoch < int(self.cfg["target_start"]):
            self.masks = {}
            return
        c = self.cfg
        masks = targeted_masks(state.detector, float(c["target_macs"]), int(c["target_round_to"]),
                               float(c["target_min_keep"]), list(c["target_ignore"] or ()))
        self.masks = {n: m for n, m in masks.items() if n in self.bns}
        self.selected = int(sum(int(m.sum()) for m in self.masks.values()))

    def after_step(self, state) -> None:
        if not self.masks:
            return
        p_now = target_progress(state.total_step, self.nb, self.cfg)
        factor = 0.0 if p_now >= 1 else (1 - p_now) / max(1 - self.p_last, 1e-12)
        self.p_last = p_now
        targets = [self.bns]
        if state.ema is not None:
            ema_modules = dict(state.ema.ema.named_modules())
            targets.append({n: ema_modules[n] for n in self.bns})
        with torch.no_grad():
            for bns in targets:
                for name, mask in self.masks.items():
                    w = bns[name].weight
                    w[mask.to(w.device)] *= factor
