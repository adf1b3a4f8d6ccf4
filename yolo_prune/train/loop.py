"""The entry points of the training loop: ``train`` (a Detector on a data yaml) and ``resume`` (a run directory).

The loop itself is ``trainer.Trainer``; its hooks and the state they see are in ``hooks.py``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from .. import offline
from ..models import checkpoint as ckpt_io, load
from . import config as train_config
from .hooks import HOOK_EVENTS, Hooks, LoopState
from .trainer import Placement, Trainer, build_optimizer, fitness, lr_factor

__all__ = ["train", "resume", "Trainer", "Hooks", "LoopState", "HOOK_EVENTS", "lr_factor", "build_optimizer",
           "fitness"]


def _setup_distributed(cfg: dict) -> tuple[Placement, bool]:
    """(placement, we_initialised). torchrun sets WORLD_SIZE/RANK/LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and str(cfg["device"]).lower() != "cpu"
    if cfg["device"] and str(cfg["device"]).lower() != "cpu" and world == 1:
        device = torch.device(cfg["device"] if not str(cfg["device"]).isdigit() else f"cuda:{cfg['device']}")
    else:
        device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if world <= 1:
        return Placement(-1, 1, device), False
    initialised = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        initialised = True
    return Placement(dist.get_rank(), dist.get_world_size(), device), initialised


def train(detector, data, epochs: int | None = None, imgsz: int | None = None, batch: int | None = None,
          out_dir="runs/train", overrides: dict | None = None, cfg_file=None,
          hooks: dict[str, list[Callable]] | None = None, teacher=None, stage: str = "train",
          resume_state: dict | None = None, teacher_source: str | None = None) -> dict:
    """Train ``detector`` in place on the YOLO dataset described by the data yaml ``data``.

    ``overrides`` are yolo_prune/defaults/train.yaml keys (unknown keys raise with a "did you mean"); ``sr`` > 0 turns on the BN-γ
    L1 penalty. ``teacher``: a Detector with the same head, for output distillation (weight ``distill_weight``).
    ``hooks``: {event: callable or list} (events: ``HOOK_EVENTS``, see ``hooks.py``).
    Writes ``out_dir/{last.pt,best.pt,results.csv,gamma_hist.png}`` (rank 0 only); the checkpoints and, at the
    end, ``detector`` itself hold the EMA weights. Returns a summary dict.
    """
    offline.apply()
    if resume_state is not None:
        cfg = dict(resume_state["cfg"])
    else:
        explicit = {k: v for k, v in {"epochs": epochs, "imgsz": imgsz, "batch": batch}.items() if v is not None}
        cfg = train_config.resolve({**(overrides or {}), **explicit}, cfg_file)  # None args keep the overrides
    registry = Hooks(hooks)  # unknown events fail before any process group starts
    placement, we_init = _setup_distributed(cfg)
    try:
        if resume_state is not None:
            teacher_source = resume_state.get("teacher")
        return Trainer(detector, data, cfg, out_dir, hooks=registry, teacher=teacher, stage=stage,
                       resume_state=resume_state, teacher_source=teacher_source, placement=placement).fit()
    finally:
        if we_init:
            dist.destroy_process_group()


def resume(run_dir, hooks: dict[str, list[Callable]] | None = None, teacher=None) -> dict:
    """Continue the run in ``run_dir`` from its last.pt: model, optimizer, EMA, epoch, LR and sparsity schedule."""
    offline.apply()
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    if not last.is_file():
        raise FileNotFoundError(f"{last}: nothing to resume (a training run writes last.pt after each epoch)")
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    if not ckpt_io.is_ours(ckpt) or "train_state" not in ckpt:
        raise ValueError(f"{last}: field 'train_state' expected (a yolo_prune training checkpoint), found keys "
                         f"{sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__}")
    state = ckpt["train_state"]
    detector = ckpt_io.from_checkpoint(ckpt, source=str(last))
    detector.load_state_dict(state["model"])  # the raw weights; the checkpoint's own weights are the EMA
    if teacher is None and state.get("teacher"):
        teacher = load(state["teacher"])
    return train(detector, state["data"], out_dir=run_dir, hooks=hooks, teacher=teacher, stage=state["stage"],
                 resume_state=state)
