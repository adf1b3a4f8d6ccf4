"""report.md, section by section: each function returns its lines (blank line last) from plain data."""
from __future__ import annotations

from pathlib import Path

from .verdict import fmt

CAPTIONS = {"gamma": "BN γ of the prunable channels before and after sparse training; red: the channels the "
                     "pruning removed and the largest removed |γ|.",
            "channels": "Output channels per prunable layer, before and after pruning.",
            "map_latency": "mAP vs {backend} latency, one point per stage output.",
            "curves": "Training loss and per-epoch val mAP of the training stages, in sequence."}


def summary_lines(text: str, warning: str | None, prune: dict, auto_notes) -> list[str]:
    """Title, verdict, warning, what the cut did and what the ``auto`` defaults chose."""
    lines = ["# Pruning report", ""]
    lines += [f"**Verdict:** {text}", ""]
    if warning:
        lines += [f"> **Warning:** {warning}", ""]
    target = next((f"{k} {prune[k]}" for k in ("target_macs", "ratio", "threshold") if prune.get(k) is not None), "")
    lines += [f"Pruning: criterion {prune.get('criterion', '-')}, {target}; {prune.get('removed_channels', '-')} "
              f"channels removed, MACs × {fmt(prune.get('macs_ratio'), '.3f')}; output check right after surgery "
              f"(before fine-tuning): max abs diff {fmt((prune.get('verification') or {}).get('max_abs_diff'), '.3g')}.",
              ""]
    if auto_notes:
        lines += ["Chosen by the `auto` defaults (yolo_prune/pipeline_defaults.py): " + "; ".join(auto_notes)
                  + ".", ""]
    return lines


def table_lines(rows: list[dict], backends: list[str]) -> list[str]:
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
            f"{r['file_bytes'] / 1e6:.2f} | {fmt(r.get('onnx_bytes') and r['onnx_bytes'] / 1e6, '.2f')} | "
            f"{r['mAP50-95']:.4f} | {r['mAP50']:.4f} | " + " | ".join(fmt(v, '.2f') for v in lat)
            + f" | {speed} |")
    return lines


def results_lines(rows: list[dict], backends: list[str], cfg: dict, env: dict, export: dict) -> list[str]:
    """The results table with how it was measured, the benchmark machine and the ONNX verification."""
    lines = ["## Results", ""]
    lines += [f"imgsz {cfg.get('imgsz', '-')}; mAP by pycocotools on the val set of `{cfg.get('data') or 'the synthetic set'}`; "
              "latency: onnxruntime, batch 1, median of "
              f"{cfg.get('bench_runs', '-')} runs, on the ONNX export of the row's architecture (the sparse model "
              "has the baseline's, the pruned one the fine-tuned one's). MACs and params per image.", ""]
    lines += table_lines(rows, backends)
    lines += ["", f"Machine: {env.get('cpu', '-')} ({env.get('cpu_count', '-')} cores), GPU: {env.get('gpu') or 'none'}; "
              f"torch {env.get('torch', '-')}, onnxruntime {env.get('onnxruntime', '-')}; "
              f"load average {env.get('loadavg_start', '-')}; {env.get('date_utc', '-')} UTC.", ""]
    if export:
        lines += ["ONNX verification (onnxruntime vs PyTorch, same input): " + "; ".join(
            f"{k}: max abs diff {fmt(v['verify'].get('max_abs_diff'), '.2g')}" for k, v in export.items()), ""]
    return lines


def plots_lines(plots: dict, main_backend: str) -> list[str]:
    if not plots:
        return []
    lines = ["## Plots", ""]
    for key, p in plots.items():
        lines += [f"![{key}]({Path(p).name})", "", CAPTIONS[key].format(backend=main_backend), ""]
    return lines


def commands_lines(commands) -> list[str]:
    if not commands:
        return []
    lines = ["## Reproduce each stage with the standalone tools", "", "Run from the repository root:", ""]
    for stage, cmd in commands:
        lines += [f"**{stage}**", "", "```bash", cmd, "```", ""]
    return lines


def stages_lines(stages: dict) -> list[str]:
    if not stages:
        return []
    lines = ["## Stages of this run", "", "| stage | folder | time (s) | |", "|---|---|---|---|"]
    for name, s in stages.items():
        lines.append(f"| {name} | `{Path(s['folder']).name}` | {s['seconds']:.1f} | "
                     f"{'reused (inputs unchanged)' if s['skipped'] else 'ran'} |")
    lines.append("")
    return lines
