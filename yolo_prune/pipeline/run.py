"""``run_pipeline``: set up the run (config, data, given models), then execute ``STAGES`` in order."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import yaml

from .. import offline
from ..io import atomic_write_text as _atomic_write_text
from .config import resolve_auto, resolve_config
from .context import Context, data_signature, given_file, jsonable
from .reporting import Report
from .stages import (Baseline, Benchmark, Evaluate, EvaluatePlain, Export, Finetune, PlainArm, Prune, Quantize,
                     SparseTrain, SyntheticData, Transfer)

# the pipeline, in order; a stage runs when its config asks for it (Stage.planned / enabled)
STAGES = [
    SyntheticData(),
    Transfer(),
    Baseline(),
    Evaluate("eval_baseline", of="baseline"),
    SparseTrain(),
    Prune(),
    Evaluate("eval_pruned", of="pruned"),
    Finetune(),
    Evaluate("eval_finetuned", of="finetuned", when=lambda cfg: cfg["epochs_finetune"] > 0),
    PlainArm(),
    EvaluatePlain("eval_plain", of="plain", when=lambda cfg: cfg["plain_arm"] is not None),
    Export(),
    Quantize(),
    Benchmark(),
    Report(),
]


def _train_images(cfg: dict) -> tuple[Path | None, int]:
    """(the data yaml of a given data set, or None for the synthetic one; its number of training images)."""
    if cfg["data"] is None:
        return None, cfg["synthetic_train"]
    from ..data.sources import data_yaml_path, list_images
    from ..data.yolo import load_data_yaml

    data_yaml = data_yaml_path(cfg["data"])  # a VOC folder: its cached YOLO conversion
    return data_yaml, len(list_images(load_data_yaml(data_yaml)["train"], field="train"))


def start_run(cfg: dict, progress: bool, stages=STAGES) -> Context:
    """The run folder and its config.yaml with every ``auto`` resolved; the given data and models registered."""
    import torch

    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    device = str(cfg["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
    data_yaml, n_train = _train_images(cfg)
    cfg, auto_notes = resolve_auto(cfg, n_train)
    _atomic_write_text(out / "config.yaml", yaml.safe_dump(jsonable(cfg), sort_keys=False))
    ctx = Context(cfg, out, device, progress, auto_notes=auto_notes)
    ctx.n_stages = sum(s.planned(cfg) for s in stages)
    if cfg["data"] is not None:
        # as given (a yaml keeps the report's commands runnable from the same folder); a VOC folder: its conversion
        data = Path(cfg["data"]) if data_yaml == Path(cfg["data"]) else data_yaml
        ctx.data_files = {"data": data_signature(data)}
        if data != Path(cfg["data"]):
            ctx.data_files["converted"] = str(data)
        ctx.use_data(data)
    register_given_models(ctx)
    return ctx


def register_given_models(ctx: Context) -> None:
    """Models the user gave are upstream "stages" whose token is the file's digest: weights, a plain arm file."""
    cfg = ctx.cfg
    if cfg["weights"] is not None:
        ctx.models["baseline"] = (given_file("weights", cfg["weights"]), "weights")
    if cfg["plain_arm"] not in (None, "train"):
        ctx.models["plain"] = (given_file("plain_arm", str(cfg["plain_arm"])), "weights")


def run_pipeline(cfg: dict | None = None, progress: bool = True) -> dict:
    """Run (or continue) every stage for the resolved config ``cfg`` (see ``resolve_config``).

    Returns {"out", "stages": {name: {folder, skipped, seconds, result}}, "report": report dict, "seconds"}.
    """
    offline.apply()  # before anything imports ultralytics
    cfg = copy.deepcopy(cfg) if cfg is not None else resolve_config()
    t0 = time.time()
    ctx = start_run(cfg, progress)
    for stage in STAGES:
        if stage.enabled(ctx):
            stage.execute(ctx)
    seconds = time.time() - t0
    print(ctx.report["verdict"], flush=True)
    print(f"pipeline finished in {seconds:.0f} s: {ctx.out / 'report.md'}", flush=True)
    return {"out": str(ctx.out), "report": ctx.report, "seconds": seconds,
            "stages": {n: {"folder": str(ctx.stages[n].folder), "skipped": ctx.stages[n].skipped,
                           "seconds": ctx.stages[n].seconds, "result": ctx.stages[n].result} for n in ctx.order}}
