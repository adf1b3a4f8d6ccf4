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

``plots.py`` draws the figures, ``verdict.py`` writes the verdict, ``markdown.py`` the sections of report.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..io import atomic_write_text as _atomic_write
from .markdown import commands_lines, plots_lines, results_lines, stages_lines, summary_lines
from .plots import (PLOTS, kept_channels, plot_gamma, plot_kept_channels, plot_map_latency, plot_training_curves,
                    read_results_csv)
from .verdict import _against_plain_arm, verdict

__all__ = ["write_report", "verdict", "read_results_csv", "kept_channels", "PLOTS"]


def draw_plots(out: Path, data: dict, rows: list[dict], main_backend: str) -> dict:
    """{plot key: PNG path} of the figures the data has something to show for."""
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
    return plots


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
    plots = draw_plots(out, data, rows, main_backend)

    env = data.get("environment") or {}
    cfg = data.get("config") or {}
    prune = data.get("prune") or {}
    export = data.get("export") or {}
    commands = data.get("commands") or []
    stages = data.get("stages") or {}
    lines = (summary_lines(text, warning, prune, data.get("auto_notes"))
             + results_lines(rows, backends, cfg, env, export) + plots_lines(plots, main_backend)
             + commands_lines(commands) + stages_lines(stages))
    report = {"verdict": text, "warning": warning, "numbers": numbers, "rows": rows, "backends": backends,
              "plots": {k: Path(p).name for k, p in plots.items()}, "prune": prune, "export": export,
              "commands": [list(c) for c in commands], "stages": stages, "environment": env, "config": cfg}
    _atomic_write(out / "report.md", "\n".join(lines))
    _atomic_write(out / "report.json", json.dumps(report, indent=2, default=str))
    return report
