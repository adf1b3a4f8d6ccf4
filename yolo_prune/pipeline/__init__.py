"""The end-to-end pipeline: baseline -> sparse training -> prune -> fine-tune -> export -> benchmark -> report.

Every stage is one call into the library (the same call the standalone tool makes) and writes into its own
numbered subfolder of the run folder::

    0_data/            synthetic shapes set (only without --data)
    0_baseline/        yolov8n trained from its yaml (only without --weights)
    1_eval_baseline/   metrics.json
    2_sparse/          sparse.pt (model only), last.pt, results.csv, metrics.json
    3_prune/           pruned.pt, pruned.json (pruning report), gamma.json, native files (pruned.ultralytics.pt ...)
    4_eval_pruned/     metrics.json
    5_finetune/        best.pt, last.pt, results.csv, native files (best.ultralytics.pt / best.yolov5.pt /
                       best.cfg + best.weights)
    6_eval_finetuned/  metrics.json
    7_export/          baseline.onnx, final.onnx (+ .json sidecars with the ORT verification)
    8_benchmark/       bench.md, bench.json
    report.md, report.json, *.png, config.yaml

A stage is skipped when its folder holds a ``stage.json`` whose key matches: the key hashes the stage's own
parameters, the tokens of the stages it reads from and the content of external input files. Each completed stage
gets a fresh random token, so re-running a stage re-runs everything downstream of it. ``stage.json`` is written
last, so a stage that failed half-way has none and is redone from an emptied folder.

Modules: ``config.py`` (defaults <- config file <- overrides, every value checked), ``stages.py`` (one class per
stage: name, parameters, inputs, run, reproduce-command), ``reporting.py`` (the report stage), ``context.py``
(what a run carries between stages, the stage cache), ``commands.py`` (reproduce-commands written with the tools'
own parsers, ``flags.py``) and ``run.py`` (``STAGES`` and ``run_pipeline``, a loop over them).
"""
from .config import DEFAULTS_FILE, load_defaults, resolve_config
from .context import STAGE_DIRS, StageResult, data_signature, file_digest
from .run import STAGES, run_pipeline
from .stages import PipelineError, Stage, auto_lr0

__all__ = ["DEFAULTS_FILE", "load_defaults", "resolve_config", "run_pipeline", "STAGES", "Stage", "STAGE_DIRS",
           "StageResult", "PipelineError", "auto_lr0", "data_signature", "file_digest"]
