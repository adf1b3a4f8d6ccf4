"""The last stage: report.md, report.json and the plots, gathered from the stage results of this run (always
rewritten, never cached: it only reads what the cached stages wrote)."""
from __future__ import annotations

import json
from pathlib import Path

from .context import Context
from .stages import Stage, benchmark_backends, prune_source


def _latency(bench_rows: list[dict]) -> dict:
    """{ONNX file stem: {backend: median ms}} of the benchmark's successful rows."""
    latency: dict = {}
    for r in bench_rows:
        if r.get("status") == "ok":
            latency.setdefault(Path(r["weights"]).stem, {})[r["backend"]] = r["latency_ms_median"]
    return latency


def _row(label: str, eval_res: dict, weights, arch: str, latency: dict, onnx_bytes) -> dict:
    """A table row: the model's eval, and the latency of the ONNX file of its architecture (``arch``)."""
    return {"stage": label, "weights": str(weights), "params": eval_res["params"], "macs": eval_res["macs"],
            "file_bytes": eval_res["file_bytes"], "onnx_bytes": onnx_bytes, "mAP50-95": eval_res["mAP50-95"],
            "mAP50": eval_res["mAP50"], "latency_ms": latency.get(arch, {}), "latency_of": arch}


def _rows(ctx: Context, latency: dict) -> list[dict]:
    """One table row per model: baseline, sparse, pruned, fine-tuned, int8 (those this run has)."""
    st = ctx.stages
    onnx = {k: v["file_bytes"] for k, v in st["export"].result.items()}
    finetuned = "finetuned" in ctx.models
    rows = [_row("baseline", st["eval_baseline"].result, ctx.model_path("baseline"), "baseline", latency,
                 onnx["baseline"])]
    if ctx.cfg["epochs_sparse"] > 0:
        rows.append(_row("sparse", st["sparse"].result, ctx.model_path("sparse"), "baseline", latency, None))
    rows.append(_row("pruned", st["eval_pruned"].result, ctx.model_path("pruned"), "final", latency,
                     None if finetuned else onnx["final"]))
    if finetuned:
        rows.append(_row("fine-tuned", st["eval_finetuned"].result, ctx.model_path("finetuned"), "final", latency,
                         onnx["final"]))
    if "quantize" in st:
        q, int8 = dict(rows[-1]), st["quantize"].out("int8")
        q.update(stage="int8", weights=str(int8), file_bytes=int8.stat().st_size, onnx_bytes=int8.stat().st_size,
                 latency_ms=latency.get("final.int8", {}), latency_of="final.int8",
                 **{k: st["quantize"].result[k] for k in ("mAP50-95", "mAP50")})
        rows.append(q)
    return rows


def _plain_row(ctx: Context, latency: dict) -> dict | None:
    """The same-budget plain arm (a): the baseline's architecture, so the baseline's latency."""
    ev = ctx.stages.get("eval_plain")
    if ev is None:
        return None
    return {**_row("plain arm (a)", ev.result, ev.result["weights"], "baseline", latency, None),
            "epochs": ev.result.get("epochs")}


def _curves(ctx: Context) -> dict:
    """{label: results.csv} of the training stages. "sparse" is the stage the cut was made on: without a sparse
    stage, the trained baseline (its curve then shows under both labels)."""
    trained_baseline = ctx.model("baseline") if ctx.cfg["weights"] is None else None
    curves = {}
    for label, st in (("baseline", trained_baseline), ("sparse", ctx.model(prune_source(ctx))),
                      ("fine-tune", ctx.stages.get("finetune"))):
        if st is not None and "results" in st.outputs:
            curves[label] = str(st.out("results"))
    return curves


def report_data(ctx: Context, auto_notes: list) -> dict:
    """Everything ``report.write_report`` takes, from this run's stage results."""
    cfg, st = ctx.cfg, ctx.stages
    latency = _latency(st["benchmark"].result["rows"])
    prune = st["prune"]
    prune_report = json.loads(prune.out("report").read_text())
    return {
        "rows": _rows(ctx, latency), "gamma": json.loads(prune.out("gamma").read_text()),
        "widths_before": prune_report["widths_before"], "widths_after": prune_report["widths_after"],
        "curves": _curves(ctx), "commands": [(n, st[n].command) for n in ctx.order if st[n].command],
        "config": cfg, "environment": json.loads(st["benchmark"].out("bench").read_text()).get("environment", {}),
        "backends": benchmark_backends(cfg), "warn_map_drop": float(cfg["warn_map_drop"]),
        "plain": _plain_row(ctx, latency), "warn_plain_drop": float(cfg["warn_plain_drop"]), "auto_notes": auto_notes,
        "compensate": cfg["compensate"], "finetune_distill": cfg["finetune_distill"],
        "transfer": st["transfer"].result if "transfer" in st else None,
        "prune": {k: prune.result.get(k) for k in ("macs_ratio", "removed_channels", "verification",
                                                   "gamma_threshold", "criterion", "target_macs", "ratio",
                                                   "threshold", "target_latency", "latency")},
        "export": st["export"].result,
        "stages": {n: {"folder": str(st[n].folder), "skipped": st[n].skipped, "seconds": st[n].seconds}
                   for n in ctx.order},
    }


class Report(Stage):
    """report.md + report.json + PNGs in the run folder (yolo_prune/report/)."""
    name = "report"

    def inputs(self, ctx):
        return [ctx.stages[n] for n in ctx.order]

    def execute(self, ctx):
        from ..report import write_report

        print(f"[{ctx.n_stages}/{ctx.n_stages}] report -> {ctx.out / 'report.md'}", flush=True)
        ctx.report = write_report(ctx.out, report_data(ctx, ctx.auto_notes))
        return None
