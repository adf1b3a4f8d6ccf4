"""The report's figures: |γ| before / after sparse training, kept channels per layer, mAP vs latency, training
curves (matplotlib Agg, written atomically)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from ..plotting import pyplot, write_figure

PLOTS = {"gamma": "gamma_hist.png", "channels": "kept_channels.png", "map_latency": "map_vs_latency.png",
         "curves": "training_curves.png"}
GAMMA_FLOOR = 1e-6  # |γ| below this is drawn at this value on the log axis


def read_results_csv(path) -> list[dict]:
    """Rows of a training results.csv with numbers parsed (empty cells dropped)."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    with open(p, newline="") as f:
        for r in csv.DictReader(f):
            parsed = {}
            for k, v in r.items():
                if v in (None, ""):
                    continue
                try:
                    parsed[k] = float(v)
                except ValueError:
                    parsed[k] = v
            rows.append(parsed)
    return rows


def plot_gamma(gamma: dict, path) -> Path:
    """|γ| of the prunable BN channels before and after sparse training, the removed ones and the cut line."""
    import numpy as np

    plt = pyplot()
    before = np.array([v for g in gamma.get("before_sparse", {}).values() for v in g], dtype=np.float64)
    after = np.array([v for g in gamma.get("after_sparse", {}).values() for v in g], dtype=np.float64)
    removed = np.array([gamma["after_sparse"][n][i] for n, idx in gamma.get("removed", {}).items() for i in idx],
                       dtype=np.float64)
    both = np.concatenate([before, after]) if before.size + after.size else np.ones(1)
    hi = max(float(both.max()), GAMMA_FLOOR * 10)
    # the axis starts just below the smallest |γ| (short runs leave them all near 1), never below the floor
    lo = min(max(GAMMA_FLOOR, float(np.clip(both, GAMMA_FLOOR, None).min()) / 2), hi / 10)
    bins = np.logspace(math.log10(lo), math.log10(hi * 1.05), 60)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.hist(np.clip(before, lo, None), bins=bins, alpha=0.5, label=f"before sparse training (n={before.size})")
    ax.hist(np.clip(after, lo, None), bins=bins, alpha=0.5, label="after sparse training")
    if removed.size:
        ax.hist(np.clip(removed, lo, None), bins=bins, histtype="step", color="crimson", lw=1.5,
                label=f"removed by pruning ({removed.size})")
    if gamma.get("threshold") is not None:
        t = max(float(gamma["threshold"]), lo)
        ax.axvline(t, color="crimson", ls="--", lw=1.2, label=f"threshold |γ| = {gamma['threshold']:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel(f"|BN γ| of prunable channels (values below {lo:.2g} drawn at {lo:.2g})")
    ax.set_ylabel("channels")
    ax.set_title("BN γ before / after sparse training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return write_figure(fig, path)


def _short(name: str) -> str:
    """model.model.12.cv1.bn -> 12.cv1 (enough to find the layer, short enough for an axis label)."""
    parts = name.split(".")
    while parts and parts[0] in ("model",):
        parts.pop(0)
    if parts and parts[-1] in ("bn", "conv"):
        parts.pop()
    return ".".join(parts) or name


def _natural(name: str) -> list:
    """model.model.2.cv1 sorts before model.model.12.cv1."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in name.split(".")]


def kept_channels(widths_before: dict, widths_after: dict, layers=None) -> list[tuple[str, int, int]]:
    """(layer, channels before, channels after) for ``layers`` (default: every layer whose output shrank)."""
    if layers is None:
        layers = [n for n, w in widths_before.items() if n in widths_after and widths_after[n][1] != w[1]]
    return [(n, int(widths_before[n][1]), int(widths_after[n][1])) for n in sorted(layers, key=_natural)
            if n in widths_before and n in widths_after]


def plot_kept_channels(channels: list[tuple[str, int, int]], path) -> Path:
    import numpy as np

    plt = pyplot()
    n = len(channels)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.22 * n + 2), 4.8))
    x = np.arange(n)
    ax.bar(x, [c[1] for c in channels], color="#c9d6e8", label="before")
    ax.bar(x, [c[2] for c in channels], color="#2b6cb0", label="after (kept)")
    ax.set_xticks(x)
    ax.set_xticklabels([_short(c[0]) for c in channels], rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    kept = sum(c[2] for c in channels) / max(sum(c[1] for c in channels), 1)
    ax.set_title(f"Channels per prunable layer ({kept:.0%} kept overall)")
    ax.legend()
    ax.margins(x=0.005)
    fig.tight_layout()
    return write_figure(fig, path)


def plot_map_latency(rows: list[dict], backend: str, path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    seen: dict[float, int] = {}
    for r in rows:
        ms = r["latency_ms"].get(backend)
        if ms is None:
            continue
        k = seen.get(ms, 0)  # rows sharing an architecture share the latency: stack their labels
        seen[ms] = k + 1
        dots = ax.scatter([ms], [r["mAP50-95"]], s=50, zorder=3)
        ax.scatter([ms], [r["mAP50"]], s=50, facecolors="none", edgecolors=dots.get_facecolor(), zorder=3)
        ax.annotate(r["stage"], (ms, r["mAP50-95"]), textcoords="offset points", xytext=(7, 4 - 11 * k), fontsize=9)
    ax.set_xlabel(f"{backend} latency, batch 1 (ms, median)")
    ax.set_ylabel("mAP50-95 (filled) / mAP50 (hollow)")
    ax.set_title("mAP vs latency per stage output")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return write_figure(fig, path)


def plot_training_curves(curves: dict, path) -> Path:
    """Loss and mAP per epoch, the training stages one after the other on a common epoch axis."""
    plt = pyplot()
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4.2))
    offset = 0
    for label, csv_path in curves.items():
        rows = read_results_csv(csv_path)
        if not rows:
            continue
        epochs = [offset + int(r.get("epoch", i + 1)) for i, r in enumerate(rows)]
        loss = [sum(v for k, v in r.items() if k.startswith("loss_") and isinstance(v, float)) for r in rows]
        line, = ax_loss.plot(epochs, loss, marker=".", label=label)
        colour = line.get_color()
        if any("mAP50" in r for r in rows):
            ax_map.plot(epochs, [r.get("mAP50-95", math.nan) for r in rows], marker=".", color=colour,
                        label=f"{label} mAP50-95")
            ax_map.plot(epochs, [r.get("mAP50", math.nan) for r in rows], ls="--", color=colour,
                        label=f"{label} mAP50")
        if offset:
            for ax in (ax_loss, ax_map):
                ax.axvline(offset + 0.5, color="grey", lw=0.6, ls=":")
        offset = epochs[-1]
    ax_loss.set_xlabel("epoch (stages in sequence)")
    ax_loss.set_ylabel("training loss (sum of terms, per image)")
    ax_loss.legend(fontsize=8)
    ax_map.set_xlabel("epoch (stages in sequence)")
    ax_map.set_ylabel("val mAP (per-epoch subset)")
    ax_map.legend(fontsize=7)
    for ax in (ax_loss, ax_map):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return write_figure(fig, path)
