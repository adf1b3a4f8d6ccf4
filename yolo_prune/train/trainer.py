"""The Trainer: plain PyTorch, yolov5/ultralytics recipe, DDP-aware, resumable; everything optional is a hook.

``Trainer.fit`` = setup (data, model, optimizer), resume, then per epoch: start, steps, end. Sparsity,
distillation, BN recalibration, checkpoints and the γ histogram are default hooks (``default_hooks.py``); a user
adds their own with ``add_hook`` or ``train(..., hooks=...)`` (events: ``hooks.HOOK_EVENTS``).

The Detector passed in is trained as it is (never rebuilt from a yaml), so pruned widths survive.
"""
from __future__ import annotations

import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ..data.yolo import augment_hyp, build_dataset, build_loader, load_data_yaml
from .bn import freeze_bn_statistics
from .default_hooks import register_defaults
from .distill import teacher_mode
from .features import FeatureTaps
from .ema import ModelEMA
from .hooks import Hooks, LoopState
from .losses import build_loss
from .sparsity import gamma_shares, gammas, prunable_bns, sr_at


class Placement(NamedTuple):
    """Where this process trains: DDP rank (-1 without DDP), process count and device."""
    rank: int = -1
    world_size: int = 1
    device: torch.device = torch.device("cpu")


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(epoch: float, cfg: dict) -> float:
    """LR multiplier at ``epoch``: linear or cosine from 1 to ``lrf``."""
    epochs, lrf = int(cfg["epochs"]), float(cfg["lrf"])
    if cfg["cos_lr"]:
        return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return (1 - epoch / epochs) * (1.0 - lrf) + lrf


def build_optimizer(model: nn.Module, cfg: dict, accumulate: int, batch: int) -> torch.optim.Optimizer:
    """Three parameter groups as in yolov5/ultralytics: biases (0), weights with decay (1), norm weights (2)."""
    biases, decay, no_decay = [], [], []
    norm_types = tuple(v for k, v in nn.__dict__.items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname == "bias":
                biases.append(p)
            elif isinstance(module, norm_types):
                no_decay.append(p)
            else:
                decay.append(p)
    wd = float(cfg["weight_decay"]) * batch * accumulate / float(cfg["nbs"])
    lr, momentum = float(cfg["lr0"]), float(cfg["momentum"])
    if cfg["optimizer"] == "AdamW":
        opt = torch.optim.AdamW(biases, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        opt = torch.optim.SGD(biases, lr=lr, momentum=momentum, nesterov=bool(cfg["nesterov"]))
    opt.add_param_group({"params": decay, "weight_decay": wd})
    opt.add_param_group({"params": no_decay, "weight_decay": 0.0})
    for g in opt.param_groups:
        g["initial_lr"] = lr
    return opt


def fitness(metrics: dict) -> float:
    """ultralytics' model selection: 0.9 * mAP50-95 + 0.1 * mAP50."""
    return 0.9 * float(metrics.get("mAP50-95", 0.0)) + 0.1 * float(metrics.get("mAP50", 0.0))


def _evaluator():
    try:
        from yolo_prune.eval.coco import evaluate
    except ImportError as e:  # the message says how to train without it
        raise ImportError("per-epoch validation needs yolo_prune.eval.coco.evaluate, which could not be imported "
                          f"({e}); set val: false to train without validation") from e
    return evaluate


class Trainer:
    """Trains ``detector`` in place on the data yaml ``data`` with the resolved config ``cfg``.

    ``fit()`` returns the summary dict of ``train()``. ``resume_state`` is a last.pt's ``train_state``.
    The setup order (and so the order in which the global RNGs are drawn from) is that of the loop this class
    replaced: seeded runs give the same weights.
    """

    def __init__(self, detector, data, cfg: dict, out_dir, hooks: Hooks | dict | None = None, teacher=None,
                 stage: str = "train", resume_state: dict | None = None, teacher_source: str | None = None,
                 placement: Placement | None = None):
        self.detector, self.data_yaml, self.cfg, self.out_dir = detector, Path(data), cfg, Path(out_dir)
        self.hooks = hooks if isinstance(hooks, Hooks) else Hooks(hooks)
        self.teacher, self.stage, self.resume_state, self.teacher_source = teacher, stage, resume_state, teacher_source
        self.rank, self.world, self.device = placement or Placement()
        self.main = self.rank in (-1, 0)
        self.taps = None  # feature-distillation hooks (features.FeatureTaps), removed when fit() ends

    def add_hook(self, event: str, fn: Callable) -> None:
        """Call ``fn(state)`` at ``event`` (one of ``HOOK_EVENTS``), after the default hooks of that event."""
        self.hooks.add(event, fn)

    def fit(self) -> dict:
        deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
        try:
            self._setup()
            self.hooks.run("train_start", self.state)
            t_train = time.time()
            for epoch in range(self.start_epoch, self.epochs):
                self._run_epoch(epoch)
                if self.state.stop:
                    break
            if self.ema is not None:  # the caller's Detector ends as the saved one: EMA weights (what best/last.pt hold)
                self.detector.load_state_dict(self.ema.ema.state_dict())
            self.hooks.run("train_end", self.state)
            return self._summary(time.time() - t_train)
        finally:  # the caller's process gets its own determinism settings back, and its models no hooks
            if self.taps is not None:
                self.taps.__exit__(None, None, None)
                self.taps = None
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            if deterministic[2] is None:
                os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)

    # ---------------------------------------------------------------------------------------------------------
    # setup

    def _setup(self) -> None:
        cfg = self.cfg
        self.seed = int(cfg["seed"])
        seed_all(self.seed)
        if cfg["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        self._resume()
        self.state = LoopState(
            detector=self.detector, cfg=cfg, out_dir=self.out_dir, optimizer=self.optimizer, ema=self.ema,
            epochs=self.epochs, history=self.history, bns=self.bns, rank=self.rank, world_size=self.world,
            epoch=self.start_epoch, total_step=self.start_epoch * self.nb, stage=self.stage, data=self.data_yaml,
            teacher_source=self.teacher_source, scaler=self.scaler, gamma_start=self.gamma_start,
            best_fitness=self.best_fit)
        self._setup_feature_taps()
        self.targeted = register_defaults(self.hooks, self.state, steps_per_epoch=self.nb, teacher=self.teacher,
                                          calib_loader=self.calib_loader, device=self.device, taps=self.taps)
        if self.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.evaluate = _evaluator() if cfg["val"] else None
        self.nw = round(float(cfg["warmup_epochs"]) * self.nb) if float(cfg["warmup_epochs"]) > 0 else -1
        self.max_steps = int(cfg["max_steps"]) if cfg.get("max_steps") else None
        self.close_at = self.epochs - int(cfg["close_mosaic"])
        self.mosaic_closed = False

    def _adopt_dataset_classes(self, data: dict) -> None:
        """The dataset defines the classes: more than the model has is an error, the same count takes its names."""
        det, data_yaml = self.detector, self.data_yaml
        if data["nc"] > det.nc:
            raise ValueError(f"{data_yaml}: dataset has {data['nc']} classes but the model has {det.nc}; give the "
                             f"model a new head with --nc auto (yolo_prune.train.sparse_train(..., nc='auto'), or "
                             f"yolo_prune.models.transfer.set_num_classes)")
        if det.nc == data["nc"] and det.names != data["names"]:
            default = {i: str(i) for i in range(det.nc)}
            if det.names != default:
                warnings.warn(f"{data_yaml}: class names {list(data['names'].values())[:5]}... replace the model's "
                              f"{list(det.names.values())[:5]}...; the dataset defines the classes", stacklevel=6)
            det.names = dict(data["names"])
            if isinstance(getattr(det, "spec", None), dict):
                det.spec["names"] = dict(data["names"])

    def _setup_data(self) -> None:
        cfg, world = self.cfg, self.world
        data = load_data_yaml(self.data_yaml)
        self._adopt_dataset_classes(data)
        self.epochs, self.imgsz = int(cfg["epochs"]), int(cfg["imgsz"])
        if int(cfg["batch"]) < world:
            raise ValueError(f"training config 'batch': {cfg['batch']} is smaller than the {world} processes")
        self.batch = int(cfg["batch"]) // world  # per process
        stride = max(self.detector.strides)
        if self.imgsz % stride:
            raise ValueError(f"training config 'imgsz': {self.imgsz} must be a multiple of the model's largest "
                             f"stride {stride}")
        self.dataset = build_dataset(data, "train", self.imgsz, self.batch, cfg, augment=True, stride=stride)
        self.hyp = augment_hyp(cfg)
        self.loader = self._train_loader()
        self.nb = len(self.loader)
        self.calib_set = self.calib_loader = None
        if self.main and int(cfg["bn_recalibrate"]) > 0 and not cfg["freeze_bn"]:  # only the main process evaluates
            # BN statistics of the training distribution (the same augmentation, mosaic while it is on), not of
            # clean images: the weights were learned under it. BCCD yolov5n (0.617 mAP50-95, trained with mosaic)
            # re-estimated on 16 clean train batches scored 0.512, on 16 augmented batches 0.614 (docs/BENCHMARKS.md)
            self.calib_set = build_dataset(data, "train", self.imgsz, self.batch, cfg, augment=True, stride=stride)
            self.calib_loader = build_loader(self.calib_set, self.batch, 0, self.seed + 1)

    def _train_loader(self):
        return build_loader(self.dataset, self.batch, int(self.cfg["workers"]), self.seed, rank=max(self.rank, 0),
                            world_size=self.world)

    def _setup_model(self) -> None:
        det, device = self.detector, self.device
        self.bns = prunable_bns(det)  # traced on the CPU before moving; module references survive .to()
        det.to(device)
        for name, p in det.named_parameters():  # stripped checkpoints may freeze everything; DFL stays fixed
            p.requires_grad_(".dfl" not in name)
        self.criterion = build_loss(det, self.cfg, self.imgsz)
        self.net: nn.Module = det
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(det, device_ids=[device.index] if device.type == "cuda"
                                                           else None)
        if self.teacher is not None:
            self.teacher = teacher_mode(self.teacher.to(device))

    def _setup_feature_taps(self) -> None:
        """Hooks on every BN of the student and the teacher when ``distill_features`` > 0, paired by the prune plan
        the pruned checkpoint carries. After the EMA copy: a deep copy would take the hooks along."""
        if float(self.cfg["distill_features"]) == 0:
            return
        if self.teacher is None:
            raise ValueError("training config 'distill_features': feature distillation needs a teacher (--teacher)")
        self.taps = FeatureTaps(self.detector, self.teacher, self.detector.prune_plan).__enter__()

    def _setup_optimizer(self) -> None:
        cfg, world = self.cfg, self.world
        self.accumulate = max(round(int(cfg["nbs"]) / (self.batch * world)), 1)
        self.optimizer = build_optimizer(self.detector, cfg, self.accumulate, self.batch * world)
        self.amp = bool(cfg["amp"]) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ema = ModelEMA(self.detector, cfg["ema_decay"], cfg["ema_tau"]) if cfg["ema"] else None

    def _resume(self) -> None:
        """Optimizer, EMA, AMP scale, epoch, best fitness, history and the γ reference from ``resume_state``."""
        self.start_epoch, self.best_fit, self.history = 0, -1.0, []
        self.gamma_start = gammas(self.bns)
        rs = self.resume_state
        if rs is not None:
            self.optimizer.load_state_dict(rs["optimizer"])
            if self.ema is not None and rs.get("ema_state") is not None:
                self.ema.ema.load_state_dict(rs["ema_state"])
                self.ema.updates = int(rs["ema_updates"])
            if self.amp and rs.get("scaler"):
                self.scaler.load_state_dict(rs["scaler"])
            self.start_epoch = int(rs["epoch"]) + 1
            self.best_fit = float(rs.get("best_fitness", -1.0))
            self.history = list(rs.get("history", []))
            if rs.get("gamma_start") is not None:
                self.gamma_start = rs["gamma_start"]
        if self.start_epoch >= self.epochs:
            raise ValueError(f"{self.out_dir}: training already finished ({self.start_epoch} of {self.epochs} "
                             "epochs done)")

    # ---------------------------------------------------------------------------------------------------------
    # one epoch

    def _run_epoch(self, epoch: int) -> None:
        t_epoch = time.time()
        self._start_epoch(epoch)
        self.sums: dict[str, float] = {}
        self.pending = False  # gradients accumulated but not yet applied
        self.last_opt = self.nb * epoch - 1  # index of the last batch that stepped the optimizer
        self.shares = gamma_shares(self.bns)
        bar = tqdm(enumerate(self.loader), total=self.nb, desc=f"{self.stage} {epoch + 1}/{self.epochs}",
                   disable=not self.main, dynamic_ncols=True, leave=True)
        for i, b in bar:
            self._step(epoch, i, b)
            self._show_progress(bar, i)
            if self.max_steps is not None and self.state.total_step + 1 >= self.max_steps:
                self.state.stop = True
                break
        bar.close()
        if self.pending:  # never carry gradients into the next epoch: an epoch is a unit of resume
            self._optimizer_step()
        self._end_epoch(epoch, t_epoch)

    def _close_mosaic(self) -> None:
        for ds in (self.dataset, self.calib_set):
            if ds is not None:
                ds.close_mosaic(self.hyp)
        if int(self.cfg["workers"]) > 0:
            # persistent data workers hold their own copy of the dataset, which would keep mosaic on: new workers
            self.loader = self._train_loader()
        self.mosaic_closed = True

    def _start_epoch(self, epoch: int) -> None:
        cfg, state = self.cfg, self.state
        state.epoch, state.sr = epoch, sr_at(epoch, cfg)
        seed_all(self.seed + epoch)  # each epoch's data order and augmentation depend on (seed, epoch) only
        if epoch >= self.close_at and not self.mosaic_closed and float(cfg["mosaic"]) > 0:
            self._close_mosaic()
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * lr_factor(epoch, cfg)
        self.net.train()
        if cfg["freeze_bn"]:
            freeze_bn_statistics(self.detector)
        self.hooks.run("epoch_start", state)

    def _warmup(self, ni: int, epoch: int) -> int:
        """Batches to accumulate at batch ``ni``; during warm-up, also ramp LR (biases from warmup_bias_lr down)
        and momentum, and accumulate less."""
        if ni > self.nw:
            return self.accumulate
        cfg, xi = self.cfg, [0, self.nw]
        for j, g in enumerate(self.optimizer.param_groups):
            g["lr"] = float(np.interp(ni, xi, [float(cfg["warmup_bias_lr"]) if j == 0 else 0.0,
                                               g["initial_lr"] * lr_factor(epoch, cfg)]))
            if "momentum" in g:
                g["momentum"] = float(np.interp(ni, xi, [float(cfg["warmup_momentum"]), float(cfg["momentum"])]))
        return max(1, int(np.interp(ni, xi, [1, self.accumulate]).round()))

    # ---------------------------------------------------------------------------------------------------------
    # one step

    def _step(self, epoch: int, i: int, b: dict) -> None:
        state = self.state
        ni = i + self.nb * epoch
        state.step, state.total_step, state.batch = i, ni, b
        acc = self._warmup(ni, epoch)
        self._forward_backward(epoch, i, b)
        if ni - self.last_opt >= acc:
            self._optimizer_step()
            self.pending, self.last_opt = False, ni
            self.hooks.run("after_step", state)
        for k, v in state.loss_items.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def _forward_backward(self, epoch: int, i: int, b: dict) -> None:
        state, device = self.state, self.device
        imgs = b["img"].to(device, non_blocking=True).float() / 255
        with torch.autocast(device_type=device.type, enabled=self.amp):
            raw = self.net(imgs)
            state.loss, state.loss_items = self.criterion(raw, b)
            state.imgs, state.raw = imgs, raw
            self.hooks.run("loss", state)  # distillation adds its term here
            loss, items = state.loss, state.loss_items
            state.imgs = state.raw = None
        if self.world > 1:
            loss = loss * self.world  # DDP averages gradients over processes; the loss is a sum over images
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.stage} epoch {epoch + 1} batch {i}: loss is {float(loss)} "
                                     f"({items}); lower lr0 or check the labels")
        self.scaler.scale(loss).backward()
        self.pending = True
        state.loss, state.loss_items = loss.detach(), items
        state.grad_scale = float(self.scaler.get_scale()) if self.amp else 1.0
        self.hooks.run("after_backward", state)

    def _optimizer_step(self) -> None:
        state, scaler = self.state, self.scaler
        scaler.unscale_(self.optimizer)
        if float(self.cfg["clip_grad"]) > 0:
            torch.nn.utils.clip_grad_norm_(self.detector.parameters(), max_norm=float(self.cfg["clip_grad"]))
        scale = state.grad_scale
        state.grad_scale = 1.0  # gradients are unscaled from here on
        self.hooks.run("before_step", state)
        state.grad_scale = scale
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.detector)

    def _show_progress(self, bar, i: int) -> None:
        if not self.main:
            return
        if i % 10 == 0:
            self.shares = gamma_shares(self.bns)
        post = {k: f"{v / (i + 1):.3f}" for k, v in self.sums.items()}
        if self.state.sr > 0 or self.bns:
            post.update(sr=f"{self.state.sr:.1e}", **{"γ<1e-2": f"{self.shares['gamma<0.01']:.1%}"})
        if self.targeted is not None:
            post["targeted"] = self.targeted.selected
        bar.set_postfix(post, refresh=False)

    # ---------------------------------------------------------------------------------------------------------
    # end of epoch

    def _end_epoch(self, epoch: int, t_epoch: float) -> None:
        state = self.state
        n_batches = state.step + 1
        row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[1]["lr"], "sr": state.sr}
        row.update({f"loss_{k}": v / n_batches for k, v in self.sums.items()})
        row.update(gamma_shares(self.bns))
        if self.targeted is not None:
            row["targeted"] = self.targeted.selected
        self.hooks.run("before_eval", state)  # BN recalibration
        metrics = self._validate()
        row.update({k: float(metrics[k]) for k in ("mAP50", "mAP50-95") if k in metrics})
        row["epoch_s"] = time.time() - t_epoch
        self.history.append(row)
        state.metrics = metrics
        self.hooks.run("epoch_end", state)
        if self.main:
            fit = fitness(metrics) if metrics else -float(sum(self.sums.values())) / n_batches  # no val: lowest loss
            state.is_best = fit > state.best_fitness
            state.best_fitness = max(state.best_fitness, fit)
            self.hooks.run("save", state)  # last.pt, best.pt, results.csv, gamma_hist.png
            msg = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            print(f"{self.stage} epoch {epoch + 1}/{self.epochs}: {msg}", flush=True)
        if self.world > 1:
            dist.barrier()

    def _validate(self) -> dict:
        if not self.main or self.evaluate is None:
            return {}
        return self.evaluate(self.state.saved_model, data=str(self.data_yaml), imgsz=self.imgsz,
                             batch=int(self.cfg["val_batch"]), device=str(self.device),
                             max_images=self.cfg["val_max_images"], verbose=False)

    def _summary(self, train_s: float) -> dict:
        state = self.state
        return {"out_dir": str(self.out_dir), "epochs_done": state.epoch + 1, "best_fitness": state.best_fitness,
                "metrics": state.metrics, "history": self.history, "gamma": gamma_shares(self.bns),
                "last": str(self.out_dir / "last.pt"), "best": str(self.out_dir / "best.pt"),
                "train_s": train_s, "world_size": self.world}
