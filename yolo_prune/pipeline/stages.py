"""The pipeline's stages, one class each, in the order ``STAGES`` runs them.

A stage declares its ``name`` (its folder in ``STAGE_DIRS`` and its entry in the report), ``tool`` (the
``tools/<tool>.py`` that reproduces it, ``None`` for a ``python -c`` line), ``provides`` (the model roles its
output stands for downstream) and implements ``planned`` (does the config ask for it), ``inputs`` (upstream
stage results: their tokens enter the cache key), ``params`` (the settings that enter the key), ``files``
(external inputs that enter the key), ``run`` (folder -> outputs, result) and ``command`` (the standalone
reproduction, written with the tool's parser by ``commands.py``).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..io import atomic_write_text as _atomic_write_text
from .commands import shell, tool_command, train_command
from .config import PRUNE_TARGETS
from .context import STAGE_DIRS, Context, StageResult


class PipelineError(RuntimeError):
    """A stage cannot run with the given inputs (bad config value, missing file...)."""


class Stage:
    """One step of the pipeline (the attributes and methods are described above). ``execute`` runs it through
    the stage cache (``Context.run_cached``) and ``finish`` then registers the model roles it provides; the
    defaults: always planned, no inputs or parameters, the given data set's signature as its files."""
    name = ""
    tool: str | None = None
    provides: dict = {}  # model role -> output key, e.g. {"pruned": "pruned"}

    def planned(self, cfg: dict) -> bool:
        """Whether the config asks for this stage (also counted in the "[i/n]" progress headers)."""
        return True

    def enabled(self, ctx: Context) -> bool:
        return self.planned(ctx.cfg)

    def inputs(self, ctx: Context) -> list[StageResult]:
        return []

    def params(self, ctx: Context) -> dict:
        return {}

    def files(self, ctx: Context) -> dict:
        return ctx.data_files

    def run(self, ctx: Context, folder: Path) -> tuple[dict, dict]:
        raise NotImplementedError

    def command(self, ctx: Context) -> str:
        return ""

    def folder(self, ctx: Context) -> Path:
        return ctx.out / STAGE_DIRS[self.name]

    def execute(self, ctx: Context) -> StageResult:
        res = ctx.run_cached(self)
        self.finish(ctx, res)
        return res

    def finish(self, ctx: Context, res: StageResult) -> None:
        for role, key in self.provides.items():
            ctx.models[role] = (res, key)


# --------------------------------------------------------------------------------------------------- helpers
def auto_lr0(optimizer: str, nc: int) -> float:
    """ultralytics' rule for short runs: AdamW at 0.002 * 5 / (4 + nc) (0.00143 for 3 classes, 0.000119 for 80;
    a pretrained model with many classes needs the small steps), SGD at 0.01."""
    return round(0.002 * 5 / (4 + nc), 6) if optimizer == "AdamW" else 0.01


def train_overrides(ctx: Context, section: str, epochs: int, sr: float | None = None) -> dict:
    """yolo_prune/defaults/train.yaml overrides for one training stage: ``train`` then the stage's section;
    'auto' resolved."""
    from ..train import config as train_config

    cfg = ctx.cfg
    o = {**(cfg["train"] or {}), **(cfg[section] or {})}
    o.update(epochs=epochs, imgsz=cfg["imgsz"], batch=cfg["batch"], seed=cfg["seed"], device=ctx.device)
    o.setdefault("val_batch", cfg["eval_batch"])
    if o.get("lr0") == "auto":
        o["lr0"] = auto_lr0(o.get("optimizer", train_config.load_defaults()["optimizer"]), ctx.nc)
    if o.get("nbs") == "auto":  # no gradient accumulation: one optimizer step per batch
        o["nbs"] = cfg["batch"]
    if sr is not None:
        o["sr"] = sr
    return o


def native_outputs(result: dict) -> dict:
    """The native files a training stage wrote beside best.pt, as stage outputs (models.native.write_native)."""
    native = result.get("native") or {}
    return {f"native_{Path(p).name}": p for p in native.get("files", [])}


def model_only(src: Path, dst: Path, stage: str) -> Path:
    """Re-save a training checkpoint without its optimizer state, so file sizes compare like with like."""
    from ..models import checkpoint, load

    det = load(src)
    checkpoint.save(det, dst, meta={"stage": stage, "source": str(src)})
    return dst


def check_widths_kept(before: Path, after: Path) -> None:
    from ..models import load
    from ..prune import layer_widths

    w0, w1 = layer_widths(load(before)), layer_widths(load(after))
    if w0 != w1:
        changed = [k for k in w0 if w0[k] != w1.get(k)][:5]
        raise PipelineError(f"{after}: fine-tuning changed layer widths ({changed}); pruned widths must survive")


def eval_model(ctx: Context, weights: Path, folder: Path) -> dict:
    from ..eval import evaluate, profile
    from ..models import load

    cfg = ctx.cfg
    m = evaluate(str(weights), data=str(ctx.data), imgsz=cfg["imgsz"], batch=cfg["eval_batch"], device=ctx.device,
                 conf=cfg["conf"], iou=cfg["iou"], out=folder, max_images=cfg["eval_max_images"],
                 verbose=False)
    prof = profile(load(weights), cfg["imgsz"])
    print(f"{weights}: mAP50-95 {m['mAP50-95']:.4f}, mAP50 {m['mAP50']:.4f} on {m['images']} images; "
          f"{prof['params'] / 1e6:.3f} M params, {prof['gflops']:.3f} GFLOPs at {cfg['imgsz']}", flush=True)
    return {"weights": str(weights), "mAP50-95": m["mAP50-95"], "mAP50": m["mAP50"], "images": m["images"],
            "params": prof["params"], "macs": prof["macs"], "gflops": prof["gflops"],
            "file_bytes": weights.stat().st_size, "speed_ms": m["speed_ms"]}


def training_result(r: dict, **extra) -> dict:
    return {"metrics": r["metrics"], "epochs": r["epochs_done"], "train_s": r["train_s"], **extra}


# --------------------------------------------------------------------------------------------------- stages
class SyntheticData(Stage):
    """0_data: the synthetic shapes set, when no data is given."""
    name = "data"

    def planned(self, cfg):
        return cfg["data"] is None

    def params(self, ctx):
        cfg = ctx.cfg
        return {"n_train": cfg["synthetic_train"], "n_val": cfg["synthetic_val"], "nc": cfg["synthetic_nc"],
                "imgsz": cfg["synthetic_imgsz"] or cfg["imgsz"], "seed": cfg["seed"]}

    def files(self, ctx):
        return {}

    def run(self, ctx, folder):
        from ..data.synthetic import make_synthetic

        sizes = self.params(ctx)
        return {"data": make_synthetic(folder / "shapes", **sizes)}, sizes

    def command(self, ctx):
        return (f"python -c \"from yolo_prune.data.synthetic import make_synthetic; make_synthetic("
                f"'{self.folder(ctx) / 'shapes'}', " + ", ".join(f"{k}={v}" for k, v in self.params(ctx).items())
                + ")\"")

    def finish(self, ctx, res):
        ctx.data_stage = res
        ctx.use_data(res.out("data"))


class Transfer(Stage):
    """0_transfer: given weights with another class count keep every matching tensor and get a new class head."""
    name = "transfer"
    provides = {"baseline": "transferred"}

    def planned(self, cfg):
        return False  # the count is made before the weights are opened: a transfer is not in it

    def enabled(self, ctx):
        from ..models import load

        return ctx.cfg["weights"] is not None and load(ctx.model_path("baseline")).nc != ctx.nc

    def inputs(self, ctx):
        return [ctx.model("baseline")]

    def params(self, ctx):
        return {"nc": ctx.nc, "names": ctx.class_names}

    def files(self, ctx):
        return {}

    def run(self, ctx, folder):
        from ..models import checkpoint, load
        from ..models.transfer import set_num_classes

        weights = ctx.model_path("baseline")
        det = load(weights)
        report = set_num_classes(det, ctx.nc, ctx.class_names)
        print(f"{weights}: {report['summary']}", flush=True)
        checkpoint.save(det, folder / "transferred.pt", meta={"stage": "transfer", "source": str(weights)})
        return ({"transferred": folder / "transferred.pt"},
                {k: report[k] for k in ("summary", "kept", "tensors", "old_nc", "nc", "matched")})

    def command(self, ctx):
        weights = ctx.model_path("baseline")
        return shell(["python", "-c", f"from yolo_prune.models import load, checkpoint; "
                      f"from yolo_prune.models.transfer import set_num_classes; d = load({str(weights)!r}); "
                      f"set_num_classes(d, {ctx.nc}, {list(ctx.class_names.values())!r}); checkpoint.save(d, "
                      f"{str(self.folder(ctx) / 'transferred.pt')!r})"])


class Baseline(Stage):
    """0_baseline: the demo's baseline, trained from the model yaml when no weights are given."""
    name = "baseline"
    tool = "sparse_train"
    provides = {"baseline": "best"}

    def planned(self, cfg):
        return cfg["weights"] is None

    def overrides(self, ctx):
        return train_overrides(ctx, "baseline_train", ctx.cfg["epochs_baseline"], sr=0.0)

    def inputs(self, ctx):
        return ctx.data_up

    def params(self, ctx):
        return {"model": ctx.cfg["model"], "nc": ctx.nc, **self.overrides(ctx)}

    def run(self, ctx, folder):
        from ..train import sparse_train

        r = sparse_train(ctx.cfg["model"], str(ctx.data), out_dir=folder, overrides=self.overrides(ctx))
        return ({"best": folder / "best.pt", "last": folder / "last.pt", "results": folder / "results.csv",
                 **native_outputs(r)}, training_result(r))

    def command(self, ctx):
        return train_command(self.tool, ctx.cfg["model"], ctx.data, self.folder(ctx), self.overrides(ctx))


class Evaluate(Stage):
    """1/4/6/6b: mAP (pycocotools), params, MACs and file size of the model in role ``of``."""
    tool = "eval_coco"

    def __init__(self, name: str, of: str, when=None):
        self.name, self.of, self.when = name, of, when

    def planned(self, cfg):
        return self.when is None or self.when(cfg)

    def inputs(self, ctx):
        return [ctx.model(self.of)] + ctx.data_up

    def params(self, ctx):
        return {k: ctx.cfg[k] for k in ("imgsz", "eval_batch", "conf", "iou", "eval_max_images")}

    def run(self, ctx, folder):
        return {"metrics": folder / "metrics.json"}, eval_model(ctx, ctx.model_path(self.of), folder)

    def command(self, ctx):
        cfg = ctx.cfg
        return tool_command(self.tool, {
            "weights": ctx.model_path(self.of), "data": ctx.data, "imgsz": cfg["imgsz"], "batch": cfg["eval_batch"],
            "device": ctx.device, "conf": cfg["conf"], "iou": cfg["iou"],
            "max_images": cfg["eval_max_images"] or None, "out": self.folder(ctx)})


class EvaluatePlain(Evaluate):
    """6b: the same-budget plain arm (a), trained here or given; its result also says how many epochs it had."""

    def finish(self, ctx, res):
        res.result["epochs"] = ctx.model(self.of).result.get("epochs")


class SparseTrain(Stage):
    """2_sparse: L1 (or targeted) sparsity training of the baseline, then its model alone and its eval."""
    name = "sparse"
    tool = "sparse_train"
    provides = {"sparse": "sparse"}

    def planned(self, cfg):
        return cfg["epochs_sparse"] > 0

    def overrides(self, ctx):
        cfg = ctx.cfg
        o = train_overrides(ctx, "sparse_train", cfg["epochs_sparse"], sr=float(cfg["sr"]))
        o.update(sr_schedule=cfg["sr_schedule"], sr_warmup=cfg["sr_warmup"])
        if cfg["sparsity"] == "targeted":  # the same selection the prune stage makes
            o.update(sparsity="targeted", target_macs=cfg["target_macs"], target_round_to=cfg["round_to"],
                     target_min_keep=cfg["min_keep"], target_ignore=list(cfg["ignore"]),
                     target_start=cfg["target_start"], target_zero_at=cfg["target_zero_at"])
        return o

    def inputs(self, ctx):
        return [ctx.model("baseline")] + ctx.data_up

    def params(self, ctx):
        return self.overrides(ctx)

    def run(self, ctx, folder):
        from ..train import sparse_train

        r = sparse_train(str(ctx.model_path("baseline")), str(ctx.data), out_dir=folder,
                         overrides=self.overrides(ctx))
        model = model_only(folder / "last.pt", folder / "sparse.pt", "sparse")
        m = eval_model(ctx, model, folder)
        return ({"sparse": model, "last": folder / "last.pt", "results": folder / "results.csv",
                 "metrics": folder / "metrics.json"},
                {**m, "gamma": r["gamma"], "epochs": r["epochs_done"], "train_s": r["train_s"]})

    def command(self, ctx):
        return train_command(self.tool, ctx.model_path("baseline"), ctx.data, self.folder(ctx), self.overrides(ctx))


def prune_source(ctx: Context) -> str:
    """The model the cut is made on: the sparse-trained one, else the baseline."""
    return "sparse" if "sparse" in ctx.models else "baseline"


def calib_args(ctx: Context) -> dict:
    """Unlabeled calibration images for reconstruct / recon: the run's training images (no labels read)."""
    cfg = ctx.cfg
    if cfg["compensate"] != "reconstruct" and cfg["criterion"] != "recon" and cfg["macs_exponent"] != "search":
        return {}
    return {"calib": str(ctx.data), "calib_images": int(cfg["calib_images"]), "calib_imgsz": cfg["imgsz"]}


def _bn_gammas(detector, names: list[str]) -> dict:
    modules = dict(detector.named_modules())
    return {n: modules[n].weight.detach().abs().float().cpu().tolist() for n in names}


def _taylor_grad_fn(ctx: Context):
    """criterion taylor: gradients of the family's loss on a few training batches (built here, from train/)."""
    if ctx.cfg["criterion"] != "taylor":
        return None
    from ..train.taylor import taylor_grad_fn
    return taylor_grad_fn(ctx.data, imgsz=min(ctx.cfg["imgsz"], 320))


def prune_with_gamma(ctx: Context, source: Path, baseline: Path, folder: Path) -> tuple[dict, dict]:
    """prune_file on ``source``, plus gamma.json: |γ| of the baseline and of ``source``, and the removed ones."""
    from ..graph import prunable_bn_names
    from ..models import load
    from ..prune.options import Calibration, LatencySetup, PassOptions, spec_from_arguments
    from ..prune.run import prune_file
    from ..train.unlabeled import student_teacher_gap

    cfg = ctx.cfg
    det = load(source)
    names = prunable_bn_names(det)
    gamma_sparse = _bn_gammas(det, names)
    gamma_base = _bn_gammas(load(baseline), names)
    out = folder / "pruned.pt"
    spec = spec_from_arguments(ratio=cfg["ratio"], criterion=cfg["criterion"], local=bool(cfg["local"]),
                               threshold=cfg["threshold"], target_macs=cfg["target_macs"],
                               target_latency=cfg["target_latency"],
                               round_to=None if cfg["target_latency"] is not None else cfg["round_to"],
                               min_keep=float(cfg["min_keep"]), ignore=list(cfg["ignore"]),
                               compensate=cfg["compensate"], macs_exponent=cfg["macs_exponent"])
    calib = calib_args(ctx)  # the same values the stage's cache key and reproduce command use
    calibration = Calibration(source=calib["calib"], count=calib["calib_images"], imgsz=calib["calib_imgsz"],
                              gap=student_teacher_gap) if calib else Calibration()
    report = prune_file(str(source), out, spec, grad_fn=_taylor_grad_fn(ctx), calibration=calibration,
                        latency=LatencySetup(backend=cfg["latency_backend"], threads=cfg["latency_threads"]),
                        run=PassOptions(imgsz=cfg["imgsz"], seed=cfg["seed"]))
    removed = {n: report["plan"]["layers"][n] for n in names if n in report["plan"]["layers"]}  # the plan itself
    removed_vals = [gamma_sparse[n][i] for n, idx in removed.items() for i in idx]
    n_channels = sum(len(g) for g in gamma_sparse.values())
    # the |γ| line the plan effectively drew: the largest removed value (bn criterion, global ranking)
    cut = max(removed_vals) if removed_vals else None
    gamma = {"before_sparse": gamma_base, "after_sparse": gamma_sparse, "removed": removed, "threshold": cut,
             "removed_count": len(removed_vals), "kept_count": n_channels - len(removed_vals)}
    _atomic_write_text(folder / "gamma.json", json.dumps(gamma))
    result = {k: report.get(k) for k in ("criterion", "ratio", "threshold", "target_macs", "target_latency",
                                         "latency", "round_to", "macs_before",
                                         "macs_after", "params_before", "params_after", "macs_ratio",
                                         "removed_channels", "prunable_channels", "verification", "compensate")}
    result.update(seconds=report["seconds"]["total"], gamma_threshold=cut,
                  macs_exponent=report["spec"]["macs_exponent"], macs_exponent_search=report.get("macs_exponent"))
    outputs = {"pruned": out, "report": out.with_suffix(".json"), "gamma": folder / "gamma.json"}
    if report.get("ultralytics_pt"):
        outputs["ultralytics"] = report["ultralytics_pt"]
    if report.get("yolov5"):
        outputs["yolov5"] = report["yolov5"]
    if report.get("darknet"):
        outputs["darknet_cfg"], outputs["darknet_weights"] = report["darknet"]
    return outputs, result


class Prune(Stage):
    """3_prune: the cut (prune.run.prune_checkpoint) plus gamma.json, the |γ| before / after and the removed ones."""
    name = "prune"
    tool = "prune"
    provides = {"pruned": "pruned"}

    def inputs(self, ctx):
        return [ctx.model(prune_source(ctx)), ctx.model("baseline")]

    def params(self, ctx):
        params = {k: ctx.cfg[k] for k in ("target_macs", "ratio", "threshold", "criterion", "local", "round_to",
                                          "min_keep", "ignore", "compensate", "imgsz", "seed")}
        if ctx.cfg["macs_exponent"]:  # 0 adds nothing: stage caches written before the exponent existed stay valid
            params["macs_exponent"] = ctx.cfg["macs_exponent"]
        params.update(calib_args(ctx))
        return params

    def files(self, ctx):
        return {}

    def run(self, ctx, folder):
        return prune_with_gamma(ctx, ctx.model_path(prune_source(ctx)), ctx.model_path("baseline"), folder)

    def command(self, ctx):
        cfg = ctx.cfg
        target = next(k for k in PRUNE_TARGETS if cfg[k] is not None)
        latency = target == "target_latency"  # the planner picks round_to from the runtime's candidates
        values = {"weights": ctx.model_path(prune_source(ctx)), target: cfg[target],
                  "backend": cfg["latency_backend"] if latency else None,
                  "threads": cfg["latency_threads"] if latency else None,
                  "criterion": cfg["criterion"], "local": bool(cfg["local"]),
                  "round_to": None if latency else cfg["round_to"], "min_keep": cfg["min_keep"],
                  "ignore": list(cfg["ignore"]), "no_compensate": cfg["compensate"] == "off",
                  "compensate": None if cfg["compensate"] == "off" else cfg["compensate"], **calib_args(ctx),
                  "macs_exponent": cfg["macs_exponent"] if target in ("target_macs", "target_latency") else None,
                  "data": ctx.data if cfg["criterion"] == "taylor" else None,
                  "imgsz": cfg["imgsz"], "seed": cfg["seed"], "out": self.folder(ctx) / "pruned.pt"}
        return tool_command(self.tool, values)


class Finetune(Stage):
    """5_finetune: the pruned model trained on (widths kept, checked)."""
    name = "finetune"
    tool = "finetune"
    provides = {"finetuned": "best"}

    def planned(self, cfg):
        return cfg["epochs_finetune"] > 0

    def overrides(self, ctx):
        o = train_overrides(ctx, "finetune_train", ctx.cfg["epochs_finetune"])
        if ctx.cfg["finetune_freeze_bn"]:  # only the pruned model's fine-tune: the plain arm keeps its recipe
            o.update(freeze_bn=True, bn_recalibrate=0)
        if ctx.cfg.get("finetune_lr0") is not None:  # likewise
            o["lr0"] = float(ctx.cfg["finetune_lr0"])
        if self.teacher(ctx) is not None:
            o["distill_weight"] = float(ctx.cfg["finetune_distill"])
            if float(ctx.cfg["finetune_distill_features"]) > 0:  # paired by the plan the pruned checkpoint carries
                o["distill_features"] = float(ctx.cfg["finetune_distill_features"])
        return o

    @staticmethod
    def teacher(ctx):
        """The baseline as the teacher of output distillation, when ``finetune_distill`` > 0 and the baseline is the
        user's model as trained: after a class-count transfer its class head is new and untrained, so no teacher."""
        t = ctx.stages.get("transfer")
        transferred = t is not None and not getattr(t, "skipped", False) and bool(getattr(t, "result", None))
        return ctx.model_path("baseline") if float(ctx.cfg["finetune_distill"]) > 0 and not transferred else None

    def inputs(self, ctx):
        return [ctx.model("pruned")] + ctx.data_up

    def params(self, ctx):
        return self.overrides(ctx)

    def run(self, ctx, folder):
        from ..train import finetune

        pruned = ctx.model_path("pruned")
        teacher = self.teacher(ctx)
        r = finetune(str(pruned), str(ctx.data), out_dir=folder, overrides=self.overrides(ctx),
                     teacher=None if teacher is None else str(teacher))
        check_widths_kept(pruned, folder / "best.pt")
        return ({"best": folder / "best.pt", "last": folder / "last.pt", "results": folder / "results.csv",
                 **native_outputs(r)}, training_result(r))

    def command(self, ctx):
        o = self.overrides(ctx)
        teacher = self.teacher(ctx)
        extra = {} if teacher is None else {"teacher": teacher, "distill_weight": o.pop("distill_weight"),
                                            "distill_features": o.pop("distill_features", None)}
        return train_command(self.tool, ctx.model_path("pruned"), ctx.data, self.folder(ctx), o,
                             {k: v for k, v in extra.items() if v is not None})


class PlainArm(Stage):
    """5b_plain: the baseline fine-tuned for the same budget without pruning (plain_arm: train), the verdict's (a)."""
    name = "plain"
    tool = "finetune"
    provides = {"plain": "best"}

    def planned(self, cfg):
        return cfg["plain_arm"] == "train"

    def overrides(self, ctx):
        return train_overrides(ctx, "finetune_train", int(ctx.cfg["plain_arm_epochs"]))

    def inputs(self, ctx):
        return [ctx.model("baseline")] + ctx.data_up

    def params(self, ctx):
        return self.overrides(ctx)

    def run(self, ctx, folder):
        from ..train import finetune

        r = finetune(str(ctx.model_path("baseline")), str(ctx.data), out_dir=folder, overrides=self.overrides(ctx))
        return {"best": folder / "best.pt", "last": folder / "last.pt", "results": folder / "results.csv"}, \
            training_result(r)

    def command(self, ctx):
        return train_command(self.tool, ctx.model_path("baseline"), ctx.data, self.folder(ctx), self.overrides(ctx))


def final_role(ctx: Context) -> str:
    """The model to ship: the fine-tuned one, else the pruned one."""
    return "finetuned" if "finetuned" in ctx.models else "pruned"


class Export(Stage):
    """7_export: baseline.onnx and final.onnx, each verified against PyTorch with onnxruntime."""
    name = "export"
    tool = "export_onnx"

    def _models(self, ctx):
        return (("baseline", ctx.model_path("baseline")), ("final", ctx.model_path(final_role(ctx))))

    def inputs(self, ctx):
        return [ctx.model("baseline"), ctx.model(final_role(ctx))]

    def params(self, ctx):
        return {"imgsz": ctx.cfg["imgsz"], "opset": ctx.cfg["opset"]}

    def files(self, ctx):
        return {}

    def run(self, ctx, folder):
        from ..export.onnx import export_onnx

        reports = {label: export_onnx(str(w), folder / f"{label}.onnx", imgsz=ctx.cfg["imgsz"],
                                      opset=ctx.cfg["opset"], verbose=ctx.progress)
                   for label, w in self._models(ctx)}
        return ({"baseline": folder / "baseline.onnx", "final": folder / "final.onnx"},
                {k: {"file_bytes": r["file_bytes"], "verify": r["verify"], "macs": r["macs"], "params": r["params"]}
                 for k, r in reports.items()})

    def command(self, ctx):
        return " && ".join(tool_command(self.tool, {"weights": w, "imgsz": ctx.cfg["imgsz"], "opset": ctx.cfg["opset"],
                                                    "out": self.folder(ctx) / f"{label}.onnx"})
                           for label, w in self._models(ctx))


class Quantize(Stage):
    """7q_quantize: INT8 (QDQ) of final.onnx, calibrated on the training images, scored on the val set."""
    name = "quantize"
    tool = "quantize"

    def planned(self, cfg):
        return bool(cfg["quantize"])

    def inputs(self, ctx):
        return [ctx.stages["export"]] + ctx.data_up

    def params(self, ctx):
        cfg = ctx.cfg
        return {"calib_images": cfg["quantize_calib_images"], "keep_fp32": str(cfg["quantize_keep_fp32"]),
                "imgsz": cfg["imgsz"], "eval_batch": cfg["eval_batch"], "conf": cfg["conf"], "iou": cfg["iou"]}

    def run(self, ctx, folder):
        from ..eval import evaluate
        from ..export.quantize import quantize_onnx

        cfg, int8 = ctx.cfg, folder / "final.int8.onnx"
        rep = quantize_onnx(ctx.stages["export"].out("final"), int8, ctx.data,
                            calib_images=cfg["quantize_calib_images"], keep_fp32=cfg["quantize_keep_fp32"],
                            threads=cfg["threads"], verbose=ctx.progress)
        m = evaluate(str(int8), data=str(ctx.data), imgsz=cfg["imgsz"], batch=cfg["eval_batch"], conf=cfg["conf"],
                     iou=cfg["iou"], out=folder, max_images=cfg["eval_max_images"], verbose=False)
        print(f"{int8}: mAP50-95 {m['mAP50-95']:.4f}, kept fp32: {', '.join(rep['kept_fp32_units']) or 'none'}",
              flush=True)
        return ({"int8": int8, "metrics": folder / "metrics.json"},
                {"mAP50-95": m["mAP50-95"], "mAP50": m["mAP50"], "kept_fp32_units": rep["kept_fp32_units"],
                 "error": rep["error"], "error_all_int8": rep["error_all_int8"]})

    def command(self, ctx):
        cfg = ctx.cfg
        return tool_command(self.tool, {"weights": ctx.stages["export"].out("final"), "calib": ctx.data,
                                        "calib_images": cfg["quantize_calib_images"],
                                        "keep_fp32": cfg["quantize_keep_fp32"],
                                        "out": self.folder(ctx) / "final.int8.onnx"})


def benchmark_backends(cfg: dict) -> list[str]:
    if cfg["bench_backends"] != "auto":
        return list(cfg["bench_backends"])
    import torch

    return ["ort-cpu"] + (["ort-cuda", "ort-trt"] if torch.cuda.is_available() else [])


class Benchmark(Stage):
    """8_benchmark: latency of the exported (and quantized) ONNX files on every backend."""
    name = "benchmark"
    tool = "benchmark"

    def _onnx_files(self, ctx):
        files = [ctx.stages["export"].out("baseline"), ctx.stages["export"].out("final")]
        return files + ([ctx.stages["quantize"].out("int8")] if "quantize" in ctx.stages else [])

    def inputs(self, ctx):
        return [ctx.stages["export"]] + ([ctx.stages["quantize"]] if "quantize" in ctx.stages else [])

    def params(self, ctx):
        cfg = ctx.cfg
        return {"imgsz": cfg["imgsz"], "runs": cfg["bench_runs"], "warmup": cfg["bench_warmup"],
                "backends": benchmark_backends(cfg), "threads": cfg["threads"], "quantize": bool(cfg["quantize"])}

    def files(self, ctx):
        return {}

    def run(self, ctx, folder):
        from ..export.benchmark import run_benchmark

        cfg = ctx.cfg
        rows = run_benchmark([str(p) for p in self._onnx_files(ctx)], imgsz=cfg["imgsz"], batches=(1,),
                             runs=cfg["bench_runs"], warmup=cfg["bench_warmup"],
                             backends=tuple(benchmark_backends(cfg)), threads=cfg["threads"], out=folder)
        return {"bench": folder / "bench.json", "md": folder / "bench.md"}, {"rows": rows}

    def command(self, ctx):
        cfg = ctx.cfg
        return tool_command(self.tool, {"weights": self._onnx_files(ctx), "imgsz": cfg["imgsz"],
                                        "runs": cfg["bench_runs"], "warmup": cfg["bench_warmup"],
                                        "backends": benchmark_backends(cfg), "threads": cfg["threads"] or None,
                                        "out": self.folder(ctx)})
