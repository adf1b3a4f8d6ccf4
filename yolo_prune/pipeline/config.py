"""The pipeline's settings: yolo_prune/defaults/pipeline.yaml <- a config file <- overrides, every key and value
checked."""
from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from .. import defaults as _defaults
from ..runtime import backend_names

DEFAULTS_FILE = _defaults.path("pipeline.yaml")  # package data: present in every installation
PRUNE_TARGETS = ("target_macs", "ratio", "threshold", "target_latency")
TRAIN_SECTIONS = ("train", "baseline_train", "sparse_train", "finetune_train")
INT_KEYS = ("imgsz", "batch", "seed", "synthetic_train", "synthetic_val", "synthetic_nc", "epochs_baseline",
            "epochs_sparse", "epochs_finetune", "sr_warmup", "target_start", "round_to", "eval_batch", "opset",
            "bench_runs", "bench_warmup", "latency_threads", "quantize_calib_images")


def load_defaults(path=DEFAULTS_FILE) -> dict:
    return _defaults.load("pipeline.yaml", "pipeline defaults", path)


def _unknown_key(key: str, known, source: str, where: str = "", listed_in=DEFAULTS_FILE) -> KeyError:
    near = difflib.get_close_matches(str(key), [str(k) for k in known], n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(where + n) for n in near)}?" if near else ""
    return KeyError(f"{source}: unknown key {where + str(key)!r}{hint} (known keys are listed in {listed_in})")


def _merge(cfg: dict, layer: dict, source: str) -> None:
    """Merge one layer of settings into ``cfg`` in place, checking every key (training sections too)."""
    from ..train import config as train_config

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
    from ..pipeline_defaults import is_auto
    from ..prune.spec import PruneSpec

    try:
        PruneSpec(ratio=cfg["ratio"], threshold=cfg["threshold"], target_macs=cfg["target_macs"],
                  target_latency=cfg["target_latency"],
                  criterion="bn" if is_auto(cfg["criterion"]) else cfg["criterion"],  # auto: taylor or bn, both valid
                  round_to=None if cfg["target_latency"] is not None else cfg["round_to"],
                  min_keep=float(cfg["min_keep"]), ignore=cfg["ignore"] if isinstance(cfg["ignore"], list) else (),
                  local=bool(cfg["local"]),  # auto becomes bias or reconstruct, both valid
                  compensate="bias" if is_auto(cfg["compensate"]) else cfg["compensate"],
                  macs_exponent=cfg["macs_exponent"])
    except ValueError as e:
        raise ValueError(f"pipeline config: {e}") from None


def _check_values(cfg: dict) -> None:
    """Every value of a resolved config, in a fixed order (the first problem found is the one reported)."""
    _check_numbers(cfg)
    _check_target(cfg)
    _check_choices(cfg)
    _check_training_plan(cfg)
    _check_reporting(cfg)
    _check_input_files(cfg)


def _check_numbers(cfg: dict) -> None:
    from ..pipeline_defaults import AUTO_KEYS, is_auto

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


def _check_target(cfg: dict) -> None:
    chosen = [k for k in PRUNE_TARGETS if cfg[k] is not None]
    if len(chosen) != 1:
        raise ValueError(f"pipeline config: give exactly one of target_macs, ratio, threshold, target_latency; found "
                         f"{', '.join(f'{k}={cfg[k]}' for k in chosen) or 'none'}")
    _check_prune_spec(cfg)
    from ..prune.latency import LATENCY_BACKENDS
    if cfg["latency_backend"] not in LATENCY_BACKENDS:
        raise ValueError(f"pipeline config 'latency_backend': expected one of {', '.join(LATENCY_BACKENDS)}, found "
                         f"{cfg['latency_backend']!r}")


def _check_choices(cfg: dict) -> None:
    from ..pipeline_defaults import is_auto

    if not isinstance(cfg["quantize"], bool):
        raise ValueError(f"pipeline config 'quantize': expected true or false, found {cfg['quantize']!r}")
    if cfg["quantize_calib_images"] < 1:
        raise ValueError(f"pipeline config 'quantize_calib_images': expected >= 1, found {cfg['quantize_calib_images']}")
    if not (isinstance(cfg["finetune_freeze_bn"], bool) or is_auto(cfg["finetune_freeze_bn"])):
        raise ValueError(f"pipeline config 'finetune_freeze_bn': expected auto, true or false, found "
                         f"{cfg['finetune_freeze_bn']!r}")
    w = cfg["finetune_distill"]
    if not is_auto(w) and (isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0):
        raise ValueError(f"pipeline config 'finetune_distill': expected auto or a weight >= 0 (0 = off), found {w!r}")
    lr = cfg["finetune_lr0"]
    if not (lr is None or is_auto(lr)) and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise ValueError(f"pipeline config 'finetune_lr0': expected auto, null or a learning rate > 0, found {lr!r}")
    w = cfg["finetune_distill_features"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
        raise ValueError(f"pipeline config 'finetune_distill_features': expected a weight >= 0 (0 = off), found {w!r}")
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


def _check_training_plan(cfg: dict) -> None:
    from ..pipeline_defaults import is_auto

    if cfg["plain_arm"] not in (None, "train") and not Path(str(cfg["plain_arm"])).is_file():
        raise FileNotFoundError(f"pipeline config 'plain_arm': expected null, train or a model file, found "
                                f"{cfg['plain_arm']!r} (no such file)")
    if cfg["sparsity"] == "targeted" and (is_auto(cfg["epochs_sparse"]) or cfg["epochs_sparse"] > 0):
        if cfg["target_macs"] is None:
            raise ValueError("pipeline config 'sparsity': targeted fades the channels a target_macs cut removes; "
                             f"set target_macs, or sparsity: l1 (found ratio={cfg['ratio']}, "
                             f"threshold={cfg['threshold']})")
        if cfg["criterion"] not in ("bn", "auto"):
            raise ValueError(f"pipeline config 'criterion': sparsity targeted ranks channels by |γ| and the cut must "
                             f"pick the faded (γ = 0) ones, so criterion must be bn; found {cfg['criterion']!r}")


def _check_reporting(cfg: dict) -> None:
    if not 0 <= float(cfg["warn_map_drop"]) <= 1:
        raise ValueError(f"pipeline config 'warn_map_drop': expected 0..1, found {cfg['warn_map_drop']}")
    backends = cfg["bench_backends"]
    if backends != "auto":
        known = backend_names()  # the runtime registry's, as the benchmark's --backends
        if isinstance(backends, str):
            backends = cfg["bench_backends"] = [backends]
        bad = [b for b in backends if b not in known]
        if bad:
            raise ValueError(f"pipeline config 'bench_backends': unknown {bad}; expected 'auto' or some of "
                             f"{', '.join(known)}")


def _check_input_files(cfg: dict) -> None:
    if cfg["weights"] is not None and not Path(str(cfg["weights"])).is_file():
        raise FileNotFoundError(f"pipeline config 'weights': {cfg['weights']} not found (expected a .pt, .cfg or "
                                ".weights file; put your checkpoint in weights/)")
    if cfg["data"] is not None and not Path(str(cfg["data"])).is_file():
        from ..data.voc import is_voc_root

        if not is_voc_root(cfg["data"]):
            raise FileNotFoundError(f"pipeline config 'data': {cfg['data']} not found (expected a YOLO data yaml "
                                    "or a Pascal VOC folder with Annotations/, JPEGImages/, ImageSets/Main/)")


def resolve_auto(cfg: dict, n_train: int) -> tuple[dict, list[str]]:
    """The ``auto`` values for a training set of ``n_train`` images (pipeline_defaults), checked and announced."""
    from ..pipeline_defaults import resolve_auto as _resolve

    cfg, notes = _resolve(cfg, n_train, load_defaults())
    _check_values(cfg)
    for n in notes:
        print(f"auto: {n}", flush=True)
    return cfg, notes

