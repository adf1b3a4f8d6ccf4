"""The Trainer's own hooks: distillation, BN recalibration, checkpoints + results.csv, the γ histogram.

``register_defaults`` puts them (and the sparsity hooks of ``sparsity.py``) in a ``Hooks`` registry as default
hooks, so they run before the user's hooks of the same event.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from ..io import atomic_write_text
from ..models import checkpoint as ckpt_io
from .bn import recalibrate_bn
from .distill import distill_loss
from .ema import unwrap
from .hooks import Hooks, LoopState
from .sparsity import SparsityHook, TargetedSparsity, gammas, plot_gamma_hist


class Distillation:
    """``loss``: adds output distillation towards ``teacher`` (already in ``distill.teacher_mode``), times
    ``weight``, to the loss, and its value per image to the loss items as ``distill``.

    With ``taps`` (a ``features.FeatureTaps`` over the student and this teacher, entered for the whole run) it
    also adds ``features_weight`` x the feature loss of the same two forwards, per image as ``distill_feat``."""

    def __init__(self, teacher, weight: float, taps=None, features_weight: float = 0.0):
        self.teacher, self.weight = teacher, float(weight)
        self.taps, self.features_weight = taps, float(features_weight)

    def __call__(self, state: LoopState) -> None:
        with torch.no_grad():
            teacher_raw = self.teacher(state.imgs)
        n = state.imgs.shape[0]
        d = distill_loss(state.raw, teacher_raw) * self.weight
        items = {"distill": float(d.detach()) / n}
        if self.taps is not None:
            # the taps' loss is a mean over positions; times the batch size it is a sum over images like the rest
            f = self.taps.loss() * (self.features_weight * n)
            d = d + f
            items["distill_feat"] = float(f.detach()) / n
        state.loss = state.loss + d
        state.loss_items = {**state.loss_items, **items}


class BNRecalibration:
    """``before_eval``: the model that is evaluated and saved gets BN statistics of its own weights, from up to
    ``max_batches`` batches of ``loader`` (train images augmented as in training: the statistics the weights
    were learned under)."""

    def __init__(self, loader, device, max_batches: int):
        self.loader, self.device, self.max_batches = loader, device, int(max_batches)

    def __call__(self, state: LoopState) -> None:
        recalibrate_bn(state.saved_model, self.loader, self.device, max_batches=self.max_batches)


def save_checkpoint(state: LoopState) -> None:
    """``save``: last.pt (the EMA weights as the model + the full training state resume needs) and, when the
    epoch is the best so far, best.pt (model only)."""
    cfg, ema = state.cfg, state.ema
    meta = {"stage": state.stage, "epoch": state.epoch + 1, "epochs": int(cfg["epochs"]), "imgsz": int(cfg["imgsz"]),
            "data": str(state.data), "metrics": {k: float(v) for k, v in state.metrics.items()
                                                 if isinstance(v, (int, float))},
            "sr": float(cfg["sr"])}
    train_state = {
        "epoch": state.epoch, "cfg": dict(cfg), "optimizer": state.optimizer.state_dict(),
        "model": {k: v.detach().clone() for k, v in unwrap(state.detector).state_dict().items()},
        "ema_state": None if ema is None else {k: v.detach().clone() for k, v in ema.ema.state_dict().items()},
        "ema_updates": 0 if ema is None else ema.updates,
        "scaler": state.scaler.state_dict() if state.scaler.is_enabled() else {},
        "best_fitness": state.best_fitness, "history": state.history, "gamma_start": state.gamma_start,
        "stage": state.stage, "data": str(state.data),
        "teacher": None if state.teacher_source is None else str(state.teacher_source),
        "sr": {"sr": float(cfg["sr"]), "schedule": cfg["sr_schedule"], "warmup": int(cfg["sr_warmup"]),
               "epochs": int(cfg["epochs"])},
    }
    ckpt_io.save(state.saved_model, state.out_dir / "last.pt", meta=meta, train_state=train_state)
    if state.is_best:
        ckpt_io.save(state.saved_model, state.out_dir / "best.pt", meta=meta)


def write_results_csv(state: LoopState) -> None:
    """``save``: results.csv, one row per epoch (floats to 6 significant digits), replaced atomically."""
    rows, path = state.history, state.out_dir / "results.csv"
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def plot_gamma_histogram(state: LoopState) -> Path:
    """``save``: gamma_hist.png, |γ| of the prunable BNs at the start vs now."""
    return plot_gamma_hist(state.gamma_start, gammas(state.bns), state.out_dir / "gamma_hist.png",
                           title=f"BN γ, {state.stage}: start vs epoch {state.epoch + 1}")


def register_defaults(hooks: Hooks, state: LoopState, *, steps_per_epoch: int, teacher=None,
                      calib_loader=None, device=None, taps=None) -> TargetedSparsity | None:
    """Register the Trainer's default hooks for this run's config; returns the targeted-sparsity hook (the
    progress bar and results.csv report how many channels it drives to 0), or None."""
    cfg = state.cfg
    if float(cfg["sr"]) > 0:
        # once per optimizer step, on unscaled and already clipped gradients: the penalty's strength is then
        # lr * sr per step whatever the data gradient's norm, accumulation or AMP scale
        hooks.add("before_step", SparsityHook(state.bns), default=True)
    targeted = None
    if cfg["sparsity"] == "targeted":
        targeted = TargetedSparsity(state.bns, cfg, steps_per_epoch)
        hooks.add("epoch_start", targeted.epoch_start, default=True)
        hooks.add("after_step", targeted.after_step, default=True)
    if teacher is not None:
        hooks.add("loss", Distillation(teacher, cfg["distill_weight"], taps, cfg["distill_features"]), default=True)
    if calib_loader is not None:
        hooks.add("before_eval", BNRecalibration(calib_loader, device, cfg["bn_recalibrate"]), default=True)
    hooks.add("save", save_checkpoint, default=True)
    hooks.add("save", write_results_csv, default=True)
    if state.bns:
        hooks.add("save", plot_gamma_histogram, default=True)
    return targeted
