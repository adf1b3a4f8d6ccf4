"""Network slimming: an L1 penalty on BatchNorm γ, its schedule, and the γ statistics users decide the ratio from."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path
