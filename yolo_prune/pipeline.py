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
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import shlex
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import offline
from .io import atomic_write_text as _atomic_write_text

from . import defaults as _defaults

DEFAULTS_FILE = _defaults.path("pipeline.yaml")  # package data: present in every installation
STAMP = "stage.json"
STAGE_VERSION = 1  # bump when a stage's outputs change meaning: old run folders are then recomputed

STAGE_DIRS = {
    "data": "0_data", "baseline": "0_baseline", "eval_baseline": "1_eval_baseline", "sparse": "2_sparse",
    "prune": "3_prune", "eval_pruned": "4_eval_pruned", "finetune": "5_finetune",
    "eval_finetuned": "6_eval_finetuned", "export": "7_export", "quantize": "7q_quantize", "benchmark": "8_benchmark",
    "transfer": "0_transfer", "plain": "5b_plain", "eval_plain": "6b_eval_plain",
}
PRUNE_TARGETS = ("target_macs", "ratio", "threshold", "target_latency")
TRAIN_SECTIONS = ("train", "baseline_train", "sparse_train", "finetune_train")
INT_KEYS = ("imgsz", "batch", "seed", "synthetic_train", "synthetic_val", "synthetic_nc", "epochs_baseline",
            "epochs_sparse", "epochs_finetune", "sr_warmup", "target_start", "round_to", "eval_batch", "opset",
            "bench_runs", "bench_warmup", "latency_threads", "quantize_calib_images")


class PipelineError(RuntimeError):
    """A stage cannot run with the given inputs (bad config value, missing file...)."""


# --------------------------------------------------------------------------------------------------- config
def load_defaults(path=DEFAULTS_FILE) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: pipeline defaults missing (yolo_prune/defaults/pipeline.yaml ships with "
                                "yolo_prune; reinstall the package)")
    return yaml.safe_load(p.read_text()) or {}


def _unknown_key(key: str, known, source: str, where: str = "", listed_in=DEFAULTS_FILE) -> KeyError:
    near = difflib.get_close_matches(str(key), [str(k) for k in known], n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(where + n) for n in near)}?" if near else ""
    return KeyError(f"{source}: unknown key {where + str(key)!r}{hint} (known keys are listed in {listed_in})")


def _merge(cfg: dict, layer: dict, source: str) -> None:
    """Merge one layer of settings into ``cfg`` in place, checking every key (training sections too)."""
    from .train import config as train_config

    train_keys = train_config.load_defaults()
    if any(layer.get(k) is not None for k in PRUNE_TARGETS):
        # a layer that names a pruning target replaces the target chosen by the layers below it
        for k in PRUNE_TARGETS:
            if k not in layer:
                cfg[k] = None
    for key, value in layer.items():
        if key not in cfg:
            raise _unknown_key(key, cfg, source)
        if key in TRAIN_SECTIONS:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ValueError(f"{source}: field '{key}' expected a mapping of yolo_prune/defaults/train.yaml keys, "
                                 f"found {value!r}")
            for k in value:
                if k not in train_keys:
                    raise _unknown_key(k, train_keys, source, where=f"{key}.", listed_in=train_config.DEFAULTS_FILE)
            cfg[key] = {**(cfg[key] or {}), **value}
        else:
            cfg[key] = value


def _dotted(overrides: dict) -> dict:
    """{"train.lr0": 0.001} -> {"train": {"lr0": 0.001}}; None values mean "keep" and are dropped."""
    out: dict = {}
    for key, value in overrides.items():
        if value is None:
            continue
        head, sep, tail = str(key).partition(".")
        if sep:
            out.setdefault(head, {})
            if not isinstance(out[head], dict):
                raise ValueError(f"override {key!r}: {head!r} was also given as a plain value")
            out[head][tail] = value
        else:
            out[key] = value
    return out


def resolve_config(config_file=None, overrides: dict | None = None) -> dict:
    """defaults (yolo_prune/defaults/pipeline.yaml) <- ``config_file`` <- ``overrides`` (dotted keys allowed: ``train.lr0``).

    Unknown keys raise ``KeyError`` with a "did you mean". Exactly one pruning target (target_macs, ratio or
    threshold) survives: the layer that names one replaces the others.
    """
    cfg = load_defaults()
    if config_file:
        p = Path(config_file)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: pipeline config not found (start from {DEFAULTS_FILE})")
        try:
            layer = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid yaml ({e})") from None
        if not isinstance(layer, dict):
            raise ValueError(f"{p}: expected a mapping of pipeline keys, found {type(layer).__name__}")
        _merge(cfg, layer, str(p))
    _merge(cfg, _dotted(overrides or {}), "override")
    _check_values(cfg)
    return cfg


def _check_prune_spec(cfg: dict) -> None:
    """The prune stage's values, with the bounds every prune entry point uses (``prune.spec.PruneSpec``)."""
    from .pipeline_defaults import is_auto
    from .prune.spec import PruneSpec

    try:
        PruneSpec(ratio=cfg["ratio"], threshold=cfg["threshold"], target_macs=cfg["target_macs"],
                  target_latency=cfg["target_latency"], criterion=cfg["criterion"],
                  round_to=None if cfg["target_latency"] is not None else cfg["round_to"],
                  min_keep=float(cfg["min_keep"]), ignore=cfg["ignore"] if isinstance(cfg["ignore"], list) else (),
                  local=bool(cfg["local"]),  # auto becomes bias or reconstruct, both valid
                  compensate="bias" if is_auto(cfg["compensate"]) else cfg["compensate"])
    except ValueError as e:
        raise ValueError(f"pipeline config: {e}") from None


def _check_values(cfg: dict) -> None:
    from .pipeline_defaults import AUTO_KEYS, is_auto

    for key in INT_KEYS + ("plain_arm_epochs",):
        v = cfg[key]
        if key in AUTO_KEYS and is_auto(v):
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"pipeline config '{key}': expected an integer, found {v!r}")
    for key in ("imgsz", "batch", "eval_batch", "bench_runs", "round_to"):
        if cfg[key] < 1:
            raise ValueError(f"pipeline config '{key}': expected >= 1, found {cfg[key]}")
    for key in ("epochs_baseline", "epochs_sparse", "epochs_finetune", "bench_warmup", "plain_arm_epochs"):
        if not is_auto(cfg[key]) and cfg[key] < 0:
            raise ValueError(f"pipeline config '{key}': expected >= 0, found {cfg[key]}")
    if cfg["weights"] is None and cfg["epochs_baseline"] < 1:
        raise ValueError("pipeline config 'epochs_baseline': must be >= 1 when no weights are given (the baseline "
                         f"is trained from {cfg['model']})")
    chosen = [k for k in PRUNE_TARGETS if cfg[k] is not None]
    if len(chosen) != 1:
        raise ValueError(f"pipeline config: give exactly one of target_macs, ratio, threshold, target_latency; found "
                         f"{', '.join(f'{k}={cfg[k]}' for k in chosen) or 'none'}")
    _check_prune_spec(cfg)
    from .prune.latency import LATENCY_BACKENDS
    if cfg["latency_backend"] not in LATENCY_BACKENDS:
        raise ValueError(f"pipeline config 'latency_backend': expected one of {', '.join(LATENCY_BACKENDS)}, found "
                         f"{cfg['latency_backend']!r}")
    if not isinstance(cfg["quantize"], bool):
        raise ValueError(f"pipeline config 'quantize': expected true or false, found {cfg['quantize']!r}")
    if cfg["quantize_calib_images"] < 1:
        raise ValueError(f"pipeline config 'quantize_calib_images': expected >= 1, found {cfg['quantize_calib_images']}")
    if not (isinstance(cfg["finetune_freeze_bn"], bool) or is_auto(cfg["finetune_freeze_bn"])):
        raise ValueError(f"pipeline config 'finetune_freeze_bn': expected auto, true or false, found "
                         f"{cfg['finetune_freeze_bn']!r}")
    if int(cfg["calib_images"]) < 1:
        raise ValueError(f"pipeline config 'calib_images': expected >= 1, found {cfg['calib_images']}")
    if not isinstance(cfg["ignore"], list):
        raise ValueError(f"pipeline config 'ignore': expected a list of layer names or globs, found {cfg['ignore']!r}")
    if not is_auto(cfg["sr"]) and (isinstance(cfg["sr"], bool) or not isinstance(cfg["sr"], (int, float))
                                   or float(cfg["sr"]) < 0):
        raise ValueError(f"pipeline config 'sr': expected auto or a number >= 0, found {cfg['sr']!r}")
    if cfg["sparsity"] not in ("auto", "l1", "targeted"):
        raise ValueError(f"pipeline config 'sparsity': expected auto, l1 or targeted, found {cfg['sparsity']!r}")
    if str(cfg["nc"]).lower() != "auto" and (isinstance(cfg["nc"], bool) or not isinstance(cfg["nc"], int)
                                             or cfg["nc"] < 1):
        raise ValueError(f"pipeline config 'nc': expected auto or a class count >= 1, found {cfg['nc']!r}")
    if cfg["train_recipe"] not in ("auto", "default"):
        raise ValueError(f"pipeline config 'train_recipe': expected auto or default, found {cfg['train_recipe']!r}")
    if cfg["plain_arm"] not in (None, "train") and not Path(str(cfg["plain_arm"])).is_file():
        raise FileNotFoundError(f"pipeline config 'plain_arm': expected null, train or a model file, found "
                                f"{cfg['plain_arm']!r} (no such file)")
    if cfg["sparsity"] == "targeted" and (is_auto(cfg["epochs_sparse"]) or cfg["epochs_sparse"] > 0):
        if cfg["target_macs"] is None:
            raise ValueError("pipeline config 'sparsity': targeted fades the channels a target_macs cut removes; "
                             f"set target_macs, or sparsity: l1 (found ratio={cfg['ratio']}, "
                             f"threshold={cfg['threshold']})")
        if cfg["criterion"] != "bn":
            raise ValueError(f"pipeline config 'criterion': sparsity targeted ranks channels by |γ| and the cut must "
                             f"pick the faded (γ = 0) ones, so criterion must be bn; found {cfg['criterion']!r}")
    if not 0 <= float(cfg["warn_map_drop"]) <= 1:
        raise ValueError(f"pipeline config 'warn_map_drop': expected 0..1, found {cfg['warn_map_drop']}")
    backends = cfg["bench_backends"]
    if backends != "auto":
        from .export.benchmark import BACKENDS

        if isinstance(backends, str):
            backends = cfg["bench_backends"] = [backends]
        bad = [b for b in backends if b not in BACKENDS]
        if bad:
            raise ValueError(f"pipeline config 'bench_backends': unknown {bad}; expected 'auto' or some of "
                             f"{', '.join(BACKENDS)}")
    if cfg["weights"] is not None and not Path(str(cfg["weights"])).is_file():
        raise FileNotFoundError(f"pipeline config 'weights': {cfg['weights']} not found (expected a .pt, .cfg or "
                                ".weights file; put your checkpoint in weights/)")
    if cfg["data"] is not None and not Path(str(cfg["data"])).is_file():
        from .data.voc import is_voc_root

        if not is_voc_root(cfg["data"]):
            raise FileNotFoundError(f"pipeline config 'data': {cfg['data']} not found (expected a YOLO data yaml "
                                    "or a Pascal VOC folder with Annotations/, JPEGImages/, ImageSets/Main/)")


# --------------------------------------------------------------------------------------------------- helpers
def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_signature(data_yaml: Path) -> dict:
    """The yaml's content plus file count and bytes of every split: cheap, and changes when images are added."""
    from .data.yolo import load_data_yaml

    d = load_data_yaml(data_yaml)
    sig = {"yaml": file_digest(data_yaml)}
    for split in ("train", "val"):
        n = size = 0
        for src in d[split]:
            p = Path(src)
            files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p] if p.is_file() else []
            n += len(files)
            size += sum(f.stat().st_size for f in files)
            if p.is_dir() and p.parent.parent.joinpath("labels", p.name).is_dir():  # yolo layout: labels too
                labels = [f for f in p.parent.parent.joinpath("labels", p.name).rglob("*.txt")]
                n += len(labels)
                size += sum(f.stat().st_size for f in labels)
        sig[split] = [n, size]
    return sig


def _shell(args: list) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


@dataclass
class StageResult:
    name: str
    folder: Path
    token: str
    outputs: dict
    result: dict
    skipped: bool
    seconds: float
    command: str = ""

    def out(self, key: str) -> Path:
        return self.folder / self.outputs[key]


@dataclass
class _Run:
    cfg: dict
    out: Path
    device: str
    progress: bool
    n_stages: int = 0
    data: Path | None = None
    data_stage: StageResult | None = None
    data_files: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    order: list = field(default_factory=list)

    def stage(self, name: str, params: dict, upstream: list, files: dict, fn, command: str = "") -> StageResult:
        """Run ``fn(folder) -> (outputs, result)`` unless the folder already holds this exact stage."""
        from tqdm import tqdm

        folder = self.out / STAGE_DIRS[name]
        key_src = {"stage": name, "version": STAGE_VERSION, "params": _jsonable(params),
                   "upstream": {u.name: u.token for u in upstream}, "files": files}
        key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()
        index = len(self.order) + 1
        header = f"[{index}/{self.n_stages}] {name} -> {folder}"
        stamp = _read_stamp(folder)
        if stamp and stamp.get("key") == key and all((folder / v).exists() for v in stamp["outputs"].values()):
            print(f"{header}: up to date, skipped", flush=True)
            res = StageResult(name, folder, stamp["token"], stamp["outputs"], stamp["result"], True,
                              float(stamp.get("seconds", 0.0)), command)
        else:
            print(f"{header}", flush=True)
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            t0 = time.time()
            bar = tqdm(total=1, desc=f"stage {name}", unit="stage", disable=not self.progress, leave=True)
            try:
                outputs, result = fn(folder)
            finally:
                bar.update(0)
            bar.update(1)
            bar.close()
            seconds = time.time() - t0
            outputs = {k: str(Path(v).resolve().relative_to(folder.resolve())) for k, v in outputs.items()}
            res = StageResult(name, folder, uuid.uuid4().hex, outputs, _jsonable(result), False, seconds, command)
            stamp = {"stage": name, "key": key, "token": res.token, "inputs": key_src, "outputs": outputs,
                     "result": res.result, "seconds": seconds, "command": command,
                     "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
            _atomic_write_text(folder / STAMP, json.dumps(stamp, indent=2))
        self.stages[name] = res
        self.order.append(name)
        return res


def _read_stamp(folder: Path) -> dict | None:
    p = folder / STAMP
    if not p.is_file():
        return None
    try:
        s = json.loads(p.read_text())
    except json.JSONDecodeError:
        return None
    return s if isinstance(s, dict) and {"key", "token", "outputs", "result"} <= set(s) else None


def auto_lr0(optimizer: str, nc: int) -> float:
    """ultralytics' rule for short runs: AdamW at 0.002 * 5 / (4 + nc) (0.00143 for 3 classes, 0.000119 for 80;
    a pretrained model with many classes needs the small steps), SGD at 0.01."""
    return round(0.002 * 5 / (4 + nc), 6) if optimizer == "AdamW" else 0.01


def _train_overrides(cfg: dict, section: str, epochs: int, device: str, nc: int, sr: float | None = None) -> dict:
    """yolo_prune/defaults/train.yaml overrides for one training stage: ``train`` then the stage's section; 'auto' resolved."""
    from .train import config as train_config

    o = {**(cfg["train"] or {}), **(cfg[section] or {})}
    o.update(epochs=epochs, imgsz=cfg["imgsz"], batch=cfg["batch"], seed=cfg["seed"], device=device)
    o.setdefault("val_batch", cfg["eval_batch"])
    if o.get("lr0") == "auto":
        o["lr0"] = auto_lr0(o.get("optimizer", train_config.load_defaults()["optimizer"]), nc)
    if o.get("nbs") == "auto":  # no gradient accumulation: one optimizer step per batch
        o["nbs"] = cfg["batch"]
    if sr is not None:
        o["sr"] = sr
    return o


def _train_command(tool: str, weights, data, out, overrides: dict) -> str:
    args = ["python", f"tools/{tool}", "--weights", weights, "--data", data, "--epochs",
            overrides["epochs"], "--imgsz", overrides["imgsz"], "--batch", overrides["batch"], "--device",
            overrides["device"]]
    direct = {"epochs", "imgsz", "batch", "device"}
    if tool == "sparse_train.py":
        direct |= {"sr"}
        args += ["--sr", overrides.get("sr", 0.0)]
    rest = [f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in overrides.items()
            if k not in direct]
    if rest:
        args += ["--set", *rest]
    return _shell(args + ["--out", out])


# --------------------------------------------------------------------------------------------------- stages
def _eval_model(run: _Run, weights: Path, folder: Path) -> dict:
    from .eval import evaluate, profile
    from .models import load

    cfg = run.cfg
    m = evaluate(str(weights), data=str(run.data), imgsz=cfg["imgsz"], batch=cfg["eval_batch"], device=run.device,
                 conf=cfg["conf"], iou=cfg["iou"], out=folder, max_images=cfg["eval_max_images"],
                 verbose=False)
    prof = profile(load(weights), cfg["imgsz"])
    print(f"{weights}: mAP50-95 {m['mAP50-95']:.4f}, mAP50 {m['mAP50']:.4f} on {m['images']} images; "
          f"{prof['params'] / 1e6:.3f} M params, {prof['gflops']:.3f} GFLOPs at {cfg['imgsz']}", flush=True)
    return {"weights": str(weights), "mAP50-95": m["mAP50-95"], "mAP50": m["mAP50"], "images": m["images"],
            "params": prof["params"], "macs": prof["macs"], "gflops": prof["gflops"],
            "file_bytes": weights.stat().st_size, "speed_ms": m["speed_ms"]}


def _eval_stage(run: _Run, name: str, weights_stage: StageResult, key: str) -> StageResult:
    cfg = run.cfg
    weights = weights_stage.out(key)
    folder = run.out / STAGE_DIRS[name]
    cmd = _shell(["python", "tools/eval_coco.py", "--weights", weights, "--data", run.data, "--imgsz", cfg["imgsz"],
                  "--batch", cfg["eval_batch"], "--device", run.device, "--conf", cfg["conf"], "--iou", cfg["iou"]]
                 + (["--max-images", cfg["eval_max_images"]] if cfg["eval_max_images"] else []) + ["--out", folder])
    params = {k: cfg[k] for k in ("imgsz", "eval_batch", "conf", "iou", "eval_max_images")}
    return run.stage(name, params, [weights_stage, run.data_stage] if run.data_stage else [weights_stage],
                     run.data_files,
                     lambda f: ({"metrics": f / "metrics.json"}, _eval_model(run, weights, f)), cmd)


def _bn_gammas(detector, names: list[str]) -> dict:
    modules = dict(detector.named_modules())
    return {n: modules[n].weight.detach().abs().float().cpu().tolist() for n in names}


def _calib_args(run: _Run) -> dict:
    """Unlabeled calibration images for reconstruct / recon: the run's training images (no labels read)."""
    cfg = run.cfg
    if cfg["compensate"] != "reconstruct" and cfg["criterion"] != "recon":
        return {}
    return {"calib": str(run.data), "calib_images": int(cfg["calib_images"]), "calib_imgsz": cfg["imgsz"]}


def _taylor_args(run: _Run) -> dict:
    """criterion taylor: gradients of the family's loss on a few training batches (built here, from train/)."""
    if run.cfg["criterion"] != "taylor":
        return {}
    from .train.taylor import taylor_grad_fn
    return {"data": str(run.data), "grad_fn": taylor_grad_fn(run.data, imgsz=min(run.cfg["imgsz"], 320))}


def _prune(run: _Run, source: Path, baseline: Path, folder: Path) -> tuple[dict, dict]:
    from .graph import prunable_bn_names
    from .models import load
    from .prune.run import prune_checkpoint

    cfg = run.cfg
    det = load(source)
    names = prunable_bn_names(det)
    gamma_sparse = _bn_gammas(det, names)
    gamma_base = _bn_gammas(load(baseline), names)
    out = folder / "pruned.pt"
    report = prune_checkpoint(str(source), out, ratio=cfg["ratio"], criterion=cfg["criterion"],
                              local=bool(cfg["local"]), threshold=cfg["threshold"], target_macs=cfg["target_macs"],
                              round_to=None if cfg["target_latency"] is not None else cfg["round_to"],
                              min_keep=float(cfg["min_keep"]), ignore=list(cfg["ignore"]),
                              imgsz=cfg["imgsz"], compensate=cfg["compensate"], seed=cfg["seed"],
                              target_latency=cfg["target_latency"], backend=cfg["latency_backend"],
                              threads=cfg["latency_threads"], **_calib_args(run), **_taylor_args(run))
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
    result.update(seconds=report["seconds"]["total"], gamma_threshold=cut)
    outputs = {"pruned": out, "report": out.with_suffix(".json"), "gamma": folder / "gamma.json"}
    if report.get("ultralytics_pt"):
        outputs["ultralytics"] = report["ultralytics_pt"]
    if report.get("yolov5"):
        outputs["yolov5"] = report["yolov5"]
    if report.get("darknet"):
        outputs["darknet_cfg"], outputs["darknet_weights"] = report["darknet"]
    return outputs, result


def _native_outputs(result: dict) -> dict:
    """The native files a training stage wrote beside best.pt, as stage outputs (models.native.write_native)."""
    native = result.get("native") or {}
    return {f"native_{Path(p).name}": p for p in native.get("files", [])}


def _quantize_stage(run: _Run, export_stage: StageResult) -> StageResult:
    """INT8 (QDQ) of final.onnx: calibration on the data's training images, mAP on its val set."""
    from .eval import evaluate
    from .export.quantize import quantize_onnx

    cfg = run.cfg
    folder = run.out / STAGE_DIRS["quantize"]
    src = export_stage.out("final")
    params = {"calib_images": cfg["quantize_calib_images"], "keep_fp32": str(cfg["quantize_keep_fp32"]),
              "imgsz": cfg["imgsz"], "eval_batch": cfg["eval_batch"], "conf": cfg["conf"], "iou": cfg["iou"]}
    cmd = _shell(["python", "tools/quantize.py", "--weights", src, "--calib", run.data, "--calib-images",
                  cfg["quantize_calib_images"], "--keep-fp32", cfg["quantize_keep_fp32"], "--out",
                  folder / "final.int8.onnx"])

    def _quantize(f):
        rep = quantize_onnx(src, f / "final.int8.onnx", run.data, calib_images=cfg["quantize_calib_images"],
                            keep_fp32=cfg["quantize_keep_fp32"], threads=cfg["threads"], verbose=run.progress)
        m = evaluate(str(f / "final.int8.onnx"), data=str(run.data), imgsz=cfg["imgsz"], batch=cfg["eval_batch"],
                     conf=cfg["conf"], iou=cfg["iou"], out=f, max_images=cfg["eval_max_images"], verbose=False)
        print(f"{f / 'final.int8.onnx'}: mAP50-95 {m['mAP50-95']:.4f}, kept fp32: "
              f"{', '.join(rep['kept_fp32_units']) or 'none'}", flush=True)
        return ({"int8": f / "final.int8.onnx", "metrics": f / "metrics.json"},
                {"mAP50-95": m["mAP50-95"], "mAP50": m["mAP50"], "kept_fp32_units": rep["kept_fp32_units"],
                 "error": rep["error"], "error_all_int8": rep["error_all_int8"]})

    up = [export_stage] + ([run.data_stage] if run.data_stage else [])
    return run.stage("quantize", params, up, run.data_files, _quantize, cmd)


def _model_only(src: Path, dst: Path, stage: str) -> Path:
    """Re-save a training checkpoint without its optimizer state, so file sizes compare like with like."""
    from .models import checkpoint, load

    det = load(src)
    checkpoint.save(det, dst, meta={"stage": stage, "source": str(src)})
    return dst


def _check_widths_kept(before: Path, after: Path) -> None:
    from .models import load
    from .prune import layer_widths

    w0, w1 = layer_widths(load(before)), layer_widths(load(after))
    if w0 != w1:
        changed = [k for k in w0 if w0[k] != w1.get(k)][:5]
        raise PipelineError(f"{after}: fine-tuning changed layer widths ({changed}); pruned widths must survive")


def _benchmark_backends(cfg: dict) -> list[str]:
    if cfg["bench_backends"] != "auto":
        return list(cfg["bench_backends"])
    import torch

    return ["ort-cpu"] + (["ort-cuda", "ort-trt"] if torch.cuda.is_available() else [])


def _resolve_auto(cfg: dict, n_train: int) -> tuple[dict, list[str]]:
    from .pipeline_defaults import resolve_auto

    cfg, notes = resolve_auto(cfg, n_train, load_defaults())
    _check_values(cfg)
    for n in notes:
        print(f"auto: {n}", flush=True)
    return cfg, notes


def _transfer_stage(run: _Run, weights_stage: StageResult, nc: int, names: dict) -> tuple[StageResult, str]:
    """Weights with another class count: keep every matching tensor, new class head (0_transfer/transferred.pt)."""
    from .models import checkpoint, load
    from .models.transfer import set_num_classes

    weights = weights_stage.out("weights")
    det = load(weights)
    if det.nc == nc:
        return weights_stage, "weights"

    def _transfer(f):
        report = set_num_classes(det, nc, names)
        print(f"{weights}: {report['summary']}", flush=True)
        checkpoint.save(det, f / "transferred.pt", meta={"stage": "transfer", "source": str(weights)})
        return {"transferred": f / "transferred.pt"}, {k: report[k] for k in ("summary", "kept", "tensors",
                                                                               "old_nc", "nc", "matched")}

    cmd = _shell(["python", "-c", f"from yolo_prune.models import load, checkpoint; "
                  f"from yolo_prune.models.transfer import set_num_classes; d = load({str(weights)!r}); "
                  f"set_num_classes(d, {nc}, {list(names.values())!r}); checkpoint.save(d, "
                  f"{str(run.out / STAGE_DIRS['transfer'] / 'transferred.pt')!r})"])
    stage = run.stage("transfer", {"nc": nc, "names": names}, [weights_stage], {}, _transfer, cmd)
    return stage, "transferred"


def _plain_arm(run: _Run, base_stage: StageResult, base_key: str, device: str, nc: int, data_up: list):
    """(a) for the verdict: train it (plain_arm: train) or score a given model; None when there is none."""
    cfg = run.cfg
    if cfg["plain_arm"] is None:
        return None
    if cfg["plain_arm"] != "train":
        p = Path(str(cfg["plain_arm"]))
        given = StageResult("plain_arm", p.parent, file_digest(p), {"weights": p.name}, {}, True, 0.0)
        ev = _eval_stage(run, "eval_plain", given, "weights")
        ev.result.setdefault("epochs", None)
        return ev
    from .train import finetune

    baseline = base_stage.out(base_key)
    folder = run.out / STAGE_DIRS["plain"]
    o = _train_overrides(cfg, "finetune_train", int(cfg["plain_arm_epochs"]), device, nc)

    def _plain(f):
        r = finetune(str(baseline), str(run.data), out_dir=f, overrides=o)
        return ({"best": f / "best.pt", "last": f / "last.pt", "results": f / "results.csv"},
                {"metrics": r["metrics"], "epochs": r["epochs_done"], "train_s": r["train_s"]})

    plain = run.stage("plain", o, [base_stage] + data_up, run.data_files, _plain,
                      _train_command("finetune.py", baseline, run.data, folder, o))
    ev = _eval_stage(run, "eval_plain", plain, "best")
    ev.result["epochs"] = plain.result.get("epochs")
    return ev


# --------------------------------------------------------------------------------------------------- main entry
def run_pipeline(cfg: dict | None = None, progress: bool = True) -> dict:
    """Run (or continue) every stage for the resolved config ``cfg`` (see ``resolve_config``).

    Returns {"out", "stages": {name: {folder, skipped, seconds, result}}, "report": report dict, "seconds"}.
    """
    offline.apply()  # before anything imports ultralytics
    import torch

    from .data.yolo import load_data_yaml

    cfg = copy.deepcopy(cfg) if cfg is not None else resolve_config()
    t0 = time.time()
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    device = str(cfg["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
    data_yaml = None
    if cfg["data"] is not None:
        from .data.sources import data_yaml_path, list_images

        data_yaml = data_yaml_path(cfg["data"])  # a VOC folder: its cached YOLO conversion
        n_train = len(list_images(load_data_yaml(data_yaml)["train"], field="train"))
    else:
        n_train = cfg["synthetic_train"]
    cfg, auto_notes = _resolve_auto(cfg, n_train)
    _atomic_write_text(out / "config.yaml", yaml.safe_dump(_jsonable(cfg), sort_keys=False))
    run = _Run(cfg, out, device, progress)
    # eval_baseline, prune, eval_pruned, export, benchmark, report + the optional ones
    run.n_stages = (6 + (cfg["weights"] is None) + (cfg["data"] is None) + (cfg["epochs_sparse"] > 0)
                    + 2 * (cfg["epochs_finetune"] > 0) + 2 * (cfg["plain_arm"] == "train")
                    + (cfg["plain_arm"] not in (None, "train")) + bool(cfg["quantize"]))
    imgsz = cfg["imgsz"]

    # 0: data
    if cfg["data"] is None:
        from .data.synthetic import make_synthetic

        sizes = {"n_train": cfg["synthetic_train"], "n_val": cfg["synthetic_val"], "nc": cfg["synthetic_nc"],
                 "imgsz": cfg["synthetic_imgsz"] or imgsz, "seed": cfg["seed"]}
        folder = out / STAGE_DIRS["data"]
        cmd = (f"python -c \"from yolo_prune.data.synthetic import make_synthetic; make_synthetic("
               f"'{folder / 'shapes'}', " + ", ".join(f"{k}={v}" for k, v in sizes.items()) + ")\"")
        run.data_stage = run.stage("data", sizes, [], {},
                                   lambda f: ({"data": make_synthetic(f / "shapes", **sizes)}, sizes), cmd)
        run.data = run.data_stage.out("data")
    else:
        # as given (a yaml keeps the report's commands runnable from the same folder); a VOC folder: its conversion
        run.data = Path(cfg["data"]) if data_yaml == Path(cfg["data"]) else data_yaml
        run.data_files = {"data": data_signature(run.data)}
        if run.data != Path(cfg["data"]):
            run.data_files["converted"] = str(run.data)
    data_info = load_data_yaml(run.data)
    from .train.api import resolve_nc

    nc, class_names = resolve_nc(cfg["nc"], data_info["names"], str(run.data))
    data_up = [run.data_stage] if run.data_stage else []

    # 0: baseline
    if cfg["weights"] is None:
        from .train import sparse_train

        folder = out / STAGE_DIRS["baseline"]
        o = _train_overrides(cfg, "baseline_train", cfg["epochs_baseline"], device, nc, sr=0.0)

        def _baseline(f):
            r = sparse_train(cfg["model"], str(run.data), out_dir=f, overrides=o)
            return ({"best": f / "best.pt", "last": f / "last.pt", "results": f / "results.csv",
                     **_native_outputs(r)},
                    {"metrics": r["metrics"], "epochs": r["epochs_done"], "train_s": r["train_s"]})

        base_stage = run.stage("baseline", {"model": cfg["model"], "nc": nc, **o}, data_up, run.data_files,
                               _baseline, _train_command("sparse_train.py", cfg["model"], run.data, folder, o))
        base_key = "best"
    else:
        w = Path(cfg["weights"])
        base_stage = StageResult("weights", w.parent, file_digest(w), {"weights": w.name}, {}, True, 0.0)
        base_key = "weights"
        base_stage, base_key = _transfer_stage(run, base_stage, nc, class_names)
    baseline = base_stage.out(base_key)

    # 1: baseline eval
    ev_base = _eval_stage(run, "eval_baseline", base_stage, base_key)

    # 2: sparse training
    if cfg["epochs_sparse"] > 0:
        from .train import sparse_train

        folder = out / STAGE_DIRS["sparse"]
        o = _train_overrides(cfg, "sparse_train", cfg["epochs_sparse"], device, nc, sr=float(cfg["sr"]))
        o.update(sr_schedule=cfg["sr_schedule"], sr_warmup=cfg["sr_warmup"])
        if cfg["sparsity"] == "targeted":  # the same selection the prune stage makes
            o.update(sparsity="targeted", target_macs=cfg["target_macs"], target_round_to=cfg["round_to"],
                     target_min_keep=cfg["min_keep"], target_ignore=list(cfg["ignore"]),
                     target_start=cfg["target_start"],
                     target_zero_at=cfg["target_zero_at"])

        def _sparse(f):
            r = sparse_train(str(baseline), str(run.data), out_dir=f, overrides=o)
            model = _model_only(f / "last.pt", f / "sparse.pt", "sparse")
            m = _eval_model(run, model, f)
            return ({"sparse": model, "last": f / "last.pt", "results": f / "results.csv",
                     "metrics": f / "metrics.json"},
                    {**m, "gamma": r["gamma"], "epochs": r["epochs_done"], "train_s": r["train_s"]})

        sparse_stage = run.stage("sparse", o, [base_stage] + data_up, run.data_files, _sparse,
                                 _train_command("sparse_train.py", baseline, run.data, folder, o))
        to_prune = sparse_stage.out("sparse")
    else:
        sparse_stage, to_prune = base_stage, baseline

    # 3: prune
    prune_params = {k: cfg[k] for k in ("target_macs", "ratio", "threshold", "criterion", "local", "round_to",
                                        "min_keep", "ignore", "compensate", "imgsz", "seed")}
    prune_params.update(_calib_args(run))
    folder = out / STAGE_DIRS["prune"]
    target = ["--target-macs", cfg["target_macs"]] if cfg["target_macs"] is not None else \
        ["--ratio", cfg["ratio"]] if cfg["ratio"] is not None else ["--threshold", cfg["threshold"]]
    prune_cmd = _shell(["python", "tools/prune.py", "--weights", to_prune, *target, "--criterion", cfg["criterion"],
                        *(["--local"] if cfg["local"] else []), "--round-to", cfg["round_to"], "--min-keep",
                        cfg["min_keep"], *(["--ignore", *cfg["ignore"]] if cfg["ignore"] else []),
                        *(["--no-compensate"] if cfg["compensate"] == "off" else ["--compensate", cfg["compensate"]]),
                        *[x for k, v in _calib_args(run).items() for x in (f"--{k.replace('_', '-')}", v)],
                        *(["--data", run.data] if cfg["criterion"] == "taylor" else []),
                        "--imgsz", imgsz, "--seed", cfg["seed"], "--out", folder / "pruned.pt"])
    prune_stage = run.stage("prune", prune_params, [sparse_stage, base_stage], {},
                            lambda f: _prune(run, to_prune, baseline, f), prune_cmd)
    pruned = prune_stage.out("pruned")

    # 4: eval without fine-tuning
    ev_pruned = _eval_stage(run, "eval_pruned", prune_stage, "pruned")

    # 5: fine-tune
    if cfg["epochs_finetune"] > 0:
        from .train import finetune

        folder = out / STAGE_DIRS["finetune"]
        o = _train_overrides(cfg, "finetune_train", cfg["epochs_finetune"], device, nc)
        if cfg["finetune_freeze_bn"]:  # only the pruned model's fine-tune: the plain arm keeps its recipe
            o.update(freeze_bn=True, bn_recalibrate=0)

        def _finetune(f):
            r = finetune(str(pruned), str(run.data), out_dir=f, overrides=o)
            _check_widths_kept(pruned, f / "best.pt")
            return ({"best": f / "best.pt", "last": f / "last.pt", "results": f / "results.csv",
                     **_native_outputs(r)},
                    {"metrics": r["metrics"], "epochs": r["epochs_done"], "train_s": r["train_s"]})

        ft_stage = run.stage("finetune", o, [prune_stage] + data_up, run.data_files, _finetune,
                             _train_command("finetune.py", pruned, run.data, folder, o))
        ev_final = _eval_stage(run, "eval_finetuned", ft_stage, "best")
        final_stage, final_key = ft_stage, "best"
    else:
        ft_stage = ev_final = None
        final_stage, final_key = prune_stage, "pruned"
    final = final_stage.out(final_key)

    # 5b/6b: the same-budget plain arm (a): the baseline fine-tuned without pruning, or a given model
    ev_plain = _plain_arm(run, base_stage, base_key, device, nc, data_up)

    # 7: ONNX export with verification
    from .export.onnx import export_onnx

    folder = out / STAGE_DIRS["export"]
    export_cmd = " && ".join(
        _shell(["python", "tools/export_onnx.py", "--weights", w, "--imgsz", imgsz, "--opset", cfg["opset"],
                "--out", folder / f"{label}.onnx"]) for label, w in (("baseline", baseline), ("final", final)))

    def _export(f):
        reports = {label: export_onnx(str(w), f / f"{label}.onnx", imgsz=imgsz, opset=cfg["opset"],
                                      verbose=run.progress)
                   for label, w in (("baseline", baseline), ("final", final))}
        return ({"baseline": f / "baseline.onnx", "final": f / "final.onnx"},
                {k: {"file_bytes": r["file_bytes"], "verify": r["verify"], "macs": r["macs"], "params": r["params"]}
                 for k, r in reports.items()})

    export_stage = run.stage("export", {"imgsz": imgsz, "opset": cfg["opset"]}, [base_stage, final_stage], {},
                             _export, export_cmd)

    # 7q: optional INT8 of the final model, calibrated on the training images, scored on the val set
    quant_stage = _quantize_stage(run, export_stage) if cfg["quantize"] else None

    # 8: latency benchmark
    from .export.benchmark import run_benchmark

    folder = out / STAGE_DIRS["benchmark"]
    backends = _benchmark_backends(cfg)
    onnx_files = [export_stage.out("baseline"), export_stage.out("final")]
    if quant_stage is not None:
        onnx_files.append(quant_stage.out("int8"))
    bench_params = {"imgsz": imgsz, "runs": cfg["bench_runs"], "warmup": cfg["bench_warmup"], "backends": backends,
                    "threads": cfg["threads"], "quantize": bool(cfg["quantize"])}
    bench_cmd = _shell(["python", "tools/benchmark.py", "--weights", *onnx_files, "--imgsz", imgsz, "--runs",
                        cfg["bench_runs"], "--warmup", cfg["bench_warmup"], "--backends", *backends]
                       + (["--threads", cfg["threads"]] if cfg["threads"] else []) + ["--out", folder])

    def _bench(f):
        rows = run_benchmark([str(p) for p in onnx_files], imgsz=imgsz, batches=(1,), runs=cfg["bench_runs"],
                             warmup=cfg["bench_warmup"], backends=tuple(backends), threads=cfg["threads"], out=f)
        return ({"bench": f / "bench.json", "md": f / "bench.md"}, {"rows": rows})

    bench_stage = run.stage("benchmark", bench_params, [export_stage] + ([quant_stage] if quant_stage else []), {},
                            _bench, bench_cmd)

    # 9: report
    from .export.report import write_report

    print(f"[{run.n_stages}/{run.n_stages}] report -> {out / 'report.md'}", flush=True)
    latency = {}
    for r in bench_stage.result["rows"]:
        if r.get("status") == "ok":
            latency.setdefault(Path(r["weights"]).stem, {})[r["backend"]] = r["latency_ms_median"]
    bench_env = json.loads(bench_stage.out("bench").read_text()).get("environment", {})
    onnx_bytes = {k: v["file_bytes"] for k, v in export_stage.result.items()}

    def row(label, eval_res, weights, arch, onnx_key=None):
        return {"stage": label, "weights": str(weights), "params": eval_res["params"], "macs": eval_res["macs"],
                "file_bytes": eval_res["file_bytes"], "onnx_bytes": onnx_bytes.get(onnx_key),
                "mAP50-95": eval_res["mAP50-95"], "mAP50": eval_res["mAP50"], "latency_ms": latency.get(arch, {}),
                "latency_of": arch}

    rows = [row("baseline", ev_base.result, baseline, "baseline", "baseline")]
    plain_row = None if ev_plain is None else {**row("plain arm (a)", ev_plain.result, ev_plain.result["weights"],
                                                     "baseline"), "epochs": ev_plain.result.get("epochs")}
    if cfg["epochs_sparse"] > 0:
        rows.append(row("sparse", sparse_stage.result, to_prune, "baseline"))
    rows.append(row("pruned", ev_pruned.result, pruned, "final", "final" if ft_stage is None else None))
    if ft_stage is not None:
        rows.append(row("fine-tuned", ev_final.result, final, "final", "final"))
    if quant_stage is not None:
        q = dict(rows[-1])
        q.update(stage="int8", weights=str(quant_stage.out("int8")), file_bytes=quant_stage.out("int8").stat().st_size,
                 onnx_bytes=quant_stage.out("int8").stat().st_size, latency_ms=latency.get("final.int8", {}),
                 latency_of="final.int8", **{k: quant_stage.result[k] for k in ("mAP50-95", "mAP50")})
        rows.append(q)

    curves = {}
    for label, st in (("baseline", base_stage if cfg["weights"] is None else None), ("sparse", sparse_stage),
                      ("fine-tune", ft_stage)):
        if st is not None and "results" in st.outputs:
            curves[label] = str(st.out("results"))
    gamma = json.loads(prune_stage.out("gamma").read_text())
    prune_report = json.loads(prune_stage.out("report").read_text())
    commands = [(name, run.stages[name].command) for name in run.order if run.stages[name].command]
    report = write_report(out, {
        "rows": rows, "gamma": gamma, "widths_before": prune_report["widths_before"],
        "widths_after": prune_report["widths_after"], "curves": curves, "commands": commands,
        "config": cfg, "environment": bench_env, "backends": backends, "warn_map_drop": float(cfg["warn_map_drop"]),
        "plain": plain_row, "warn_plain_drop": float(cfg["warn_plain_drop"]), "auto_notes": auto_notes,
        "transfer": run.stages["transfer"].result if "transfer" in run.stages else None,
        "prune": {k: prune_stage.result.get(k) for k in ("macs_ratio", "removed_channels", "verification",
                                                         "gamma_threshold", "criterion", "target_macs", "ratio",
                                                         "threshold", "target_latency", "latency")},
        "export": export_stage.result,
        "stages": {n: {"folder": str(run.stages[n].folder), "skipped": run.stages[n].skipped,
                       "seconds": run.stages[n].seconds} for n in run.order},
    })
    seconds = time.time() - t0
    print(report["verdict"], flush=True)
    print(f"pipeline finished in {seconds:.0f} s: {out / 'report.md'}", flush=True)
    return {"out": str(out), "report": report, "seconds": seconds,
            "stages": {n: {"folder": str(run.stages[n].folder), "skipped": run.stages[n].skipped,
                           "seconds": run.stages[n].seconds, "result": run.stages[n].result} for n in run.order}}
