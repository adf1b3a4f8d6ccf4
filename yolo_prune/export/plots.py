"""Benchmark plots (matplotlib Agg, written atomically): latency vs MACs with the ideal line, mAP vs latency."""
from __future__ import annotations

from pathlib import Path

from ..plotting import pyplot, write_figure


def _series(rows, by_architecture: bool = False):
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get("macs"):
            key = f"{r['backend']} b{r['batch']}"
            if by_architecture:
                key += f" {r.get('reference') or r.get('architecture', '')}"
            groups.setdefault(key, []).append(r)
    return groups


def plot_latency_vs_macs(rows: list[dict], path) -> Path:
    """One marker per model and series (backend x batch x architecture); dashed: latency proportional to MACs
    through the largest-MACs point of the series (the unpruned model), the best pruning can do."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (name, group) in enumerate(sorted(_series(rows, by_architecture=True).items())):
        color = f"C{i % 10}"
        xs = [r["macs"] / 1e9 for r in group]
        ys = [r["latency_ms_median"] for r in group]
        ax.scatter(xs, ys, color=color, label=name, zorder=3)
        for r, x, y in zip(group, xs, ys):
            ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ref = max(group, key=lambda r: r["macs"])
        top = ref["macs"] / 1e9
        ax.plot([0, top * 1.05], [0, ref["latency_ms_median"] * 1.05], "--", color=color, alpha=0.6, lw=1)
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel("median latency per batch (ms)")
    ax.set_title("Latency vs MACs (dashed: latency ∝ MACs through the unpruned model)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=8)
    return write_figure(fig, path)


def plot_map_vs_latency(rows: list[dict], path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (name, group) in enumerate(sorted(_series(rows).items())):
        pts = [(r["latency_ms_median"], r["map50_95"], r["model"]) for r in group if r.get("map50_95") is not None]
        if not pts:
            continue
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=f"C{i % 10}", label=name, zorder=3)
        for x, y, label in pts:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("median latency per batch (ms)")
    ax.set_ylabel("mAP50-95")
    ax.set_title("mAP vs latency")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=8)
    return write_figure(fig, path)
