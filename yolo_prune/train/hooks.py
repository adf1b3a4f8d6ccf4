"""Training hooks: the events the Trainer raises, the state every hook sees, and the registry that runs them.

Events, in the order one epoch raises them (every rank runs them, except ``save``):

* ``train_start``: after setup and resume, before the first epoch;
* ``epoch_start``: after the epoch's LR is set and the model is in train mode;
* ``loss``: per batch, inside autocast, after the detection loss: may replace ``state.loss`` and
  ``state.loss_items`` (``state.imgs`` and ``state.raw`` hold the batch and the student's raw outputs);
* ``after_backward``: per batch, after ``backward``;
* ``before_step``: per optimizer step, gradients unscaled and clipped;
* ``after_step``: after the optimizer step and the EMA update;
* ``before_eval``: after the epoch's last batch, before rank 0 validates;
* ``epoch_end``: the epoch's row is in ``state.history``, its metrics in ``state.metrics``;
* ``save``: rank 0 only, ``state.best_fitness`` / ``state.is_best`` updated: the checkpoints and plots;
* ``train_end``: after the last epoch, the caller's model holding the saved (EMA) weights.

A hook is any callable taking the ``LoopState``; it may set ``state.stop = True`` to end training after the
current epoch. The Trainer's own behaviour (sparsity, distillation, BN recalibration, checkpoints, the γ
histogram: ``default_hooks.py``) is registered as default hooks, which run before the user's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .ema import ModelEMA

HOOK_EVENTS = ("train_start", "epoch_start", "loss", "after_backward", "before_step", "after_step", "before_eval",
               "epoch_end", "save", "train_end")


@dataclass
class LoopState:
    """What hooks see (and what the checkpoint is written from). Hooks may read anything and set ``stop = True``
    to end training after the current epoch."""

    detector: nn.Module
    cfg: dict
    out_dir: Path
    optimizer: torch.optim.Optimizer | None = None
    ema: ModelEMA | None = None
    epoch: int = 0  # 0-based index of the current epoch
    epochs: int = 0
    step: int = 0  # batch index within the epoch
    total_step: int = 0  # batches seen since the start of training (resume included)
    batch: dict | None = None
    loss: torch.Tensor | None = None
    loss_items: dict = field(default_factory=dict)
    lr: float = 0.0
    sr: float = 0.0
    grad_scale: float = 1.0
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    bns: dict = field(default_factory=dict)
    rank: int = -1
    world_size: int = 1
    stop: bool = False
    # the run's identity and the rest of what last.pt holds
    stage: str = "train"
    data: Path | None = None  # the data yaml
    teacher_source: str | None = None  # the teacher's file, recorded so that resume reloads it
    scaler: Any = None  # torch.amp.GradScaler
    gamma_start: torch.Tensor | None = None  # |γ| when training started (the histogram's reference)
    best_fitness: float = -1.0
    is_best: bool = False  # the epoch just ended is the best so far (rank 0, from ``save`` on)
    # the current batch inside the ``loss`` event
    imgs: torch.Tensor | None = None
    raw: Any = None

    @property
    def saved_model(self) -> nn.Module:
        """The model that is evaluated and saved: the EMA when there is one."""
        return self.ema.ema if self.ema is not None else self.detector


class Hooks:
    """Event -> callables. Default hooks (``add(..., default=True)``, the Trainer's own) run before the user's;
    each group runs in the order it was registered."""

    def __init__(self, hooks: dict[str, list[Callable]] | None = None):
        self._default: dict[str, list[Callable]] = {e: [] for e in HOOK_EVENTS}
        self._user: dict[str, list[Callable]] = {e: [] for e in HOOK_EVENTS}
        for event, fns in (hooks or {}).items():
            for fn in list(fns) if isinstance(fns, (list, tuple)) else [fns]:
                self.add(event, fn)

    def add(self, event: str, fn: Callable, default: bool = False) -> None:
        if event not in self._user:
            raise KeyError(f"train hooks: unknown event {event!r}; expected one of {', '.join(HOOK_EVENTS)}")
        (self._default if default else self._user)[event].append(fn)

    def get(self, event: str) -> list[Callable]:
        """The callables ``run(event, ...)`` calls, in order."""
        return self._default[event] + self._user[event]

    def run(self, event: str, state: LoopState) -> None:
        for fn in self.get(event):
            fn(state)
