"""The page a user reads after a pipeline run: report.md + report.json + PNG plots (matplotlib Agg, atomic writes).

``write_report(out_dir, data)`` takes plain data (the pipeline gathers it from its stage folders):

* ``rows``: one dict per stage output: stage, folder, weights, params, macs, file_bytes, onnx_bytes (or None),
  ``mAP50-95``, mAP50, latency_ms {backend: median ms} (measured on the ONNX file of the same architecture,
  named in ``latency_of``). The first row is the baseline, the last the model to ship.
* ``gamma``: {before_sparse, after_sparse: {bn: [|γ|...]}, removed: {bn: [positions]}, threshold}.
* ``widths_before`` / ``widths_after``: {layer: [in, out]} from the pruning report.
* ``curves``: {stage label: results.csv path}; ``commands``: [(stage, shell command)].
* ``config``, ``environment`` (benchmark machine and versions), ``backends``, ``warn_map_drop``, ``prune``,
  ``export``, ``stages`` (folder, skipped, seconds).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ..io import atomic_write_text as _atomic_write
from .plots import _pyplot, _save

PLOTS = {"gamma": "gamma_hist.png", "channels": "kept_channels.png", "map_latency": "map_vs_latency.png",
         "curves": "training_curves.png"}
GAMMA_FLOOR = 1e-6  # |γ| below this is drawn at this value on the log axis


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


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


# --------------------------------------------------------------------------------------------------- plots
def plot_gamma(gamma: dict, path) -> Path:
    """|γ| of the prunable BN channels before and after sparse training, the removed ones and the cut line."""
    import numpy as np

    plt = _pyplot()
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
    try:
        _save(fig, Path(path))
    finally:
        plt.close(fig)
    return Path(path)


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

    plt = _pyplot()
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
    try:
        _save(fig, Path(path))
    finally:
        plt.close(fig)
    return Path(path)


def plot_map_latency(rows: list[dict], backend: str, path) -> Path:
    plt = _pyplot()
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
    try:
        _save(fig, Path(path))
    finally:
        plt.close(fig)
    return Path(path)


def plot_training_curves(curves: dict, path) -> Path:
    """Loss and mAP per epoch, the training stages one after the other on a common epoch axis."""
    plt = _pyplot()
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
    try:
        _save(fig, Path(path))
    finally:
        plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------------------- text
def verdict(rows: list[dict], backend: str, warn_map_drop: float) -> tuple[str, str | None, dict]:
    """("kept X% of mAP at Y× speed" sentence, warning or None, the numbers)."""
    base, final = rows[0], rows[-1]
    kept = final["mAP50-95"] / base["mAP50-95"] if base["mAP50-95"] > 0 else None
    kept50 = final["mAP50"] / base["mAP50"] if base["mAP50"] > 0 else None
    b_ms, f_ms = base["latency_ms"].get(backend), final["latency_ms"].get(backend)
    speed = b_ms / f_ms if b_ms and f_ms else None
    macs_ratio = final["macs"] / base["macs"] if base["macs"] else None
    params_ratio = final["params"] / base["params"] if base["params"] else None
    text = (f"The {final['stage']} model kept {_fmt(kept and 100 * kept, '.1f', '?')}% of the baseline mAP50-95 "
            f"({_fmt(kept50 and 100 * kept50, '.1f', '?')}% of mAP50) at {_fmt(speed, '.2f', '?')}× {backend} "
            f"speed ({_fmt(macs_ratio, '.2f', '?')}× MACs, {_fmt(params_ratio, '.2f', '?')}× parameters).")
    warning = None
    if kept is None:
        warning = "The baseline mAP50-95 is 0, so the kept share cannot be computed: check the data and weights."
    elif kept < 1 - warn_map_drop:
        warning = (f"mAP50-95 dropped by {100 * (1 - kept):.1f}% (from {base['mAP50-95']:.4f} to "
                   f"{final['mAP50-95']:.4f}), more than the {100 * warn_map_drop:.0f}% allowed by warn_map_drop. "
                   "Fine-tune longer (epochs_finetune), prune less (target_macs / ratio) or sparse-train longer "
                   "(epochs_sparse, sr) so the removed channels matter less.")
    numbers = {"kept_map50_95": kept, "kept_map50": kept50, "speedup": speed, "backend": backend,
               "macs_ratio": macs_ratio, "params_ratio": params_ratio}
    return text, warning, numbers


def _against_plain_arm(text: str, warning: str | None, numbers: dict, rows: list[dict], data: dict):
    """Add the same-budget comparison (or say there is none) and, for a transferred baseline, what it means."""
    final, plain, transfer = rows[-1], data.get("plain"), data.get("transfer")
    notes = []
    if transfer:
        if warning and warning.startswith("The baseline mAP50-95 is 0"):
            warning = None  # expected of a new head: the note below says what the reference is
        notes.append(f"The baseline is the input model with a new, untrained head for {transfer['nc']} classes "
                     f"({transfer['summary']}), so its mAP is no reference; the plain arm is.")
    if plain:
        rel = final["mAP50-95"] / plain["mAP50-95"] if plain["mAP50-95"] > 0 else None
        numbers["vs_plain_arm"] = rel
        numbers["plain_arm_map50_95"] = plain["mAP50-95"]
        epochs = f"{plain['epochs']} epochs, " if plain.get("epochs") else ""
        text += (f" Against the same-budget plain fine-tune of the baseline ({epochs}mAP50-95 "
                 f"{plain['mAP50-95']:.4f}): {_fmt(rel and 100 * rel, '.1f', '?')}%.")
        limit = 1 - float(data.get("warn_plain_drop", 0.02))
        if rel is not None and rel < limit:
            stage = {r["stage"]: r["mAP50-95"] for r in rows}
            lost_in_cut = stage.get("sparse", final["mAP50-95"]) - stage.get("pruned", final["mAP50-95"])
            where = ("the cut itself cost {:.4f} mAP50-95: sparse-train longer or use sparsity targeted so the removed "
                     "channels are zero".format(lost_in_cut) if lost_in_cut > 0.01 else
                     "the cut was (nearly) free, so the loss is in the fade and the fine-tune: give both more epochs "
                     "(epochs_sparse, epochs_finetune) or prune less (a larger target_macs)")
            more = (f"It scores {100 * rel:.1f}% of what the same training without pruning reached, below the "
                    f"{100 * limit:.0f}% of warn_plain_drop: {where}.")
            warning = f"{warning} {more}" if warning else more
    else:
        numbers["vs_plain_arm"] = None
        text += (" No same-budget plain fine-tune arm was run (plain_arm: train adds one), so this does not show "
                 "whether pruning cost more than the training it got.")
    if notes:
        text += " " + " ".join(notes)
    return text, warning


def _table(rows: list[dict], backends: list[str]) -> list[str]:
    base = rows[0]
    head = ("| stage | params (M) | GMACs | MACs × | file (MB) | ONNX (MB) | mAP50-95 | mAP50 | "
            + " | ".join(f"{b} ms" for b in backends) + f" | speed-up ({backends[0]}) |")
    lines = [head, "|" + "---|" * (9 + len(backends))]
    for r in rows:
        lat = [r["latency_ms"].get(b) for b in backends]
        b_ms, r_ms = base["latency_ms"].get(backends[0]), r["latency_ms"].get(backends[0])
        speed = f"{b_ms / r_ms:.2f}×" if b_ms and r_ms else "-"
        lines.append(
            f"| {r['stage']} | {r['params'] / 1e6:.3f} | {r['macs'] / 1e9:.3f} | {r['macs'] / base['macs']:.2f} | "
            f"{r['file_bytes'] / 1e6:.2f} | {_fmt(r.get('onnx_bytes') and r['onnx_bytes'] / 1e6, '.2f')} | "
            f"{r['mAP50-95']:.4f} | {r['mAP50']:.4f} | " + " | ".join(_fmt(v, '.2f') for v in lat)
            + f" | {speed} |")
    return lines


def write_report(out_dir, data: dict) -> dict:
    """Write report.md, report.json and the PNGs into ``out_dir``; return the report dict (report.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = data["rows"]
    if not rows:
        raise ValueError("write_report: field 'rows' expected at least the baseline row, found none")
    backends = [b for b in data.get("backends") or ["ort-cpu"] if any(b in r["latency_ms"] for r in rows)] or \
        ["ort-cpu"]
    main_backend = backends[0]
    text, warning, numbers = verdict(rows, main_backend, float(data.get("warn_map_drop", 0.1)))
    text, warning = _against_plain_arm(text, warning, numbers, rows, data)
    if data.get("plain"):
        rows = rows[:1] + [data["plain"]] + rows[1:]

    plots = {}
    gamma = data.get("gamma") or {}
    if gamma.get("after_sparse"):
        plots["gamma"] = plot_gamma(gamma, out / PLOTS["gamma"])
    layers = list(gamma.get("after_sparse", {})) or None
    channels = kept_channels(data.get("widths_before", {}), data.get("widths_after", {}), layers)
    if channels:
        plots["channels"] = plot_kept_channels(channels, out / PLOTS["channels"])
    if any(r["latency_ms"].get(main_backend) for r in rows):
        plots["map_latency"] = plot_map_latency(rows, main_backend, out / PLOTS["map_latency"])
    if any(read_results_csv(p) for p in (data.get("curves") or {}).values()):
        plots["curves"] = plot_training_curves(data["curves"], out / PLOTS["curves"])

    env = data.get("environment") or {}
    cfg = data.get("config") or {}
    prune = data.get("prune") or {}
    lines = ["# Pruning report", ""]
    lines += [f"**Verdict:** {text}", ""]
    if warning:
        lines += [f"> **Warning:** {warning}", ""]
    target = next((f"{k} {prune[k]}" for k in ("target_macs", "ratio", "threshold") if prune.get(k) is not None), "")
    lines += [f"Pruning: criterion {prune.get('criterion', '-')}, {target}; {prune.get('removed_channels', '-')} "
              f"channels removed, MACs × {_fmt(prune.get('macs_ratio'), '.3f')}; output check right after surgery "
              f"(before fine-tuning): max abs diff {_fmt((prune.get('verification') or {}).get('max_abs_diff'), '.3g')}.",
              ""]
    if data.get("auto_notes"):
        lines += ["Chosen by the `auto` defaults (yolo_prune/pipeline_defaults.py): " + "; ".join(data["auto_notes"])
                  + ".", ""]
    lines += ["## Results", ""]
    lines += [f"imgsz {cfg.get('imgsz', '-')}; mAP by pycocotools on the val set of `{cfg.get('data') or 'the synthetic set'}`; "
              "latency: onnxruntime, batch 1, median of "
              f"{cfg.get('bench_runs', '-')} runs, on the ONNX export of the row's architecture (the sparse model "
              "has the baseline's, the pruned one the fine-tuned one's). MACs and params per image.", ""]
    lines += _table(rows, backends)
    lines += ["", f"Machine: {env.get('cpu', '-')} ({env.get('cpu_count', '-')} cores), GPU: {env.get('gpu') or 'none'}; "
              f"torch {env.get('torch', '-')}, onnxruntime {env.get('onnxruntime', '-')}; "
              f"load average {env.get('loadavg_start', '-')}; {env.get('date_utc', '-')} UTC.", ""]
    export = data.get("export") or {}
    if export:
        lines += ["ONNX verification (onnxruntime vs PyTorch, same input): " + "; ".join(
            f"{k}: max abs diff {_fmt(v['verify'].get('max_abs_diff'), '.2g')}" for k, v in export.items()), ""]
    captions = {"gamma": "BN γ of the prunable channels before and after sparse training; red: the channels the "
                         "pruning removed and the largest removed |γ|.",
                "channels": "Output channels per prunable layer, before and after pruning.",
                "map_latency": f"mAP vs {main_backend} latency, one point per stage output.",
                "curves": "Training loss and per-epoch val mAP of the training stages, in sequence."}
    if plots:
        lines += ["## Plots", ""]
        for key, p in plots.items():
            lines += [f"![{key}]({Path(p).name})", "", captions[key], ""]
    commands = data.get("commands") or []
    if commands:
        lines += ["## Reproduce each stage with the standalone tools", "", "Run from the repository root:", ""]
        for stage, cmd in commands:
            lines += [f"**{stage}**", "", "```bash", cmd, "```", ""]
    stages = data.get("stages") or {}
    if stages:
        lines += ["## Stages of this run", "", "| stage | folder | time (s) | |", "|---|---|---|---|"]
        for name, s in stages.items():
            lines.append(f"| {name} | `{Path(s['folder']).name}` | {s['seconds']:.1f} | "
                         f"{'reused (inputs unchanged)' if s['skipped'] else 'ran'} |")
        lines.append("")

    report = {"verdict": text, "warning": warning, "numbers": numbers, "rows": rows, "backends": backends,
              "plots": {k: Path(p).name for k, p in plots.items()}, "prune": prune, "export": export,
              "commands": [list(c) for c in commands], "stages": stages, "environment": env, "config": cfg}
    _atomic_write(out / "report.md", "\n".join(lines))
    _atomic_write(out / "report.json", json.dumps(report, indent=2, default=str))
    return report
