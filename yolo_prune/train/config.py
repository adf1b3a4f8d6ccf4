"""Training hyperparameters: defaults from the package's defaults/train.yaml, overrides checked against them."""
from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from .. import defaults as _defaults
from ..prune.spec import PruneSpec

DEFAULTS_FILE = _defaults.path("train.yaml")  # package data: present in every installation


def load_defaults(path=DEFAULTS_FILE) -> dict:
    return _defaults.load("train.yaml", "training defaults", path)


def check_keys(overrides: dict, defaults: dict, source: str = "training config") -> None:
    """Reject unknown keys, suggesting the closest known one."""
    for key in overrides:
        if key not in defaults:
            near = difflib.get_close_matches(str(key), list(defaults), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
            raise KeyError(f"{source}: unknown key {key!r}{hint} (known keys are listed in {DEFAULTS_FILE})")


def resolve(overrides: dict | None = None, cfg_file=None) -> dict:
    """defaults <- cfg_file (yaml) <- overrides; ``None`` values in overrides mean "keep the default"."""
    cfg = load_defaults()
    if cfg_file:
        p = Path(cfg_file)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: training config not found")
        extra = yaml.safe_load(p.read_text()) or {}
        check_keys(extra, cfg, source=str(p))
        cfg.update(extra)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_keys(overrides, cfg)
    cfg.update(overrides)
    if cfg["optimizer"] not in ("SGD", "AdamW"):
        raise ValueError(f"training config 'optimizer': expected SGD or AdamW, found {cfg['optimizer']!r}")
    if cfg["sr_schedule"] not in ("constant", "linear", "cosine"):
        raise ValueError(f"training config 'sr_schedule': expected constant, linear or cosine, "
                         f"found {cfg['sr_schedule']!r}")
    if cfg["sparsity"] not in ("l1", "targeted"):
        raise ValueError(f"training config 'sparsity': expected l1 or targeted, found {cfg['sparsity']!r}")
    if cfg["sparsity"] == "targeted":
        if cfg["target_macs"] is None:
            raise ValueError("training config 'target_macs': sparsity targeted needs the MACs fraction you will "
                             "prune to (0 < F <= 1), found None")
        try:  # the bounds every prune entry point uses
            PruneSpec(target_macs=cfg["target_macs"], round_to=int(cfg["target_round_to"]),
                      min_keep=float(cfg["target_min_keep"]), ignore=list(cfg["target_ignore"] or ()), criterion="bn")
        except ValueError as e:
            raise ValueError(f"training config 'target_macs': {e}") from None
        if not 0 < float(cfg["target_zero_at"]) <= 1:
            raise ValueError(f"training config 'target_zero_at': expected 0 < fraction <= 1, found "
                             f"{cfg['target_zero_at']!r}")
        if not 0 <= int(cfg["target_start"]) < int(cfg["epochs"]) * float(cfg["target_zero_at"]):
            raise ValueError(f"training config 'target_start': expected 0 <= epoch < target_zero_at * epochs "
                             f"({float(cfg['target_zero_at']) * int(cfg['epochs']):g}), found {cfg['target_start']}")
    for key in ("epochs", "batch", "imgsz", "nbs"):
        if int(cfg[key]) < 1:
            raise ValueError(f"training config '{key}': expected >= 1, found {cfg[key]}")
    for key in ("sr", "distill_features"):
        if float(cfg[key]) < 0:
            raise ValueError(f"training config '{key}': expected >= 0, found {cfg[key]}")
    return cfg
