"""The training loop: plain PyTorch, named hooks, yolov5/ultralytics recipe, DDP-aware, resumable.

The Detector passed in is trained as it is (never rebuilt from a yaml), so pruned widths survive.
"""
from __future__ import annotations

import csv
import io
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .. import offline
from ..models import checkpoint as ckpt_io
from . import config as train_config
from .ema import ModelEMA, unwrap
from .losses import build_loss
from .bn import freeze_bn_statistics, recalibrate_bn
from .sparsity import SparsityHook, TargetedSparsity, gamma_shares, gammas, plot_gamma_hist, prunable_bns, sr_at

HOOK_EVENTS = ("train_start", "epoch_start", "after_backward", "before_step", "after_step", "epoch_end",
               "train_end")


@dataclass
class LoopState:
    """What hooks see. Hooks may read anything and set ``stop = True`` to end training after the current epoch."""

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


def _hooks(hooks: dict[str, list[Callable]] | None) -> dict[str, list[Callable]]:
    out = {e: [] for e in HOOK_EVENTS}
    for event, fns in (hooks or {}).items():
        if event not in out:
            raise KeyError(f"train hooks: unknown event {event!r}; expected one of {', '.join(HOOK_EVENTS)}")
        out[event] += list(fns) if isinstance(fns, (list, tuple)) else [fns]
    return out


def _seed_all(seed: int) -> None:
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


def _setup_distributed(cfg: dict):
    """(rank, world_size, local_rank, device, we_initialised). torchrun sets WORLD_SIZE/RANK/LOCAL_RANK."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and str(cfg["device"]).lower() != "cpu"
    if cfg["device"] and str(cfg["device"]).lower() != "cpu" and world == 1:
        device = torch.device(cfg["device"] if not str(cfg["device"]).isdigit() else f"cuda:{cfg['device']}")
    else:
        device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if world <= 1:
        return -1, 1, 0, device, False
    initialised = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        initialised = True
    return dist.get_rank(), dist.get_world_size(), local_rank, device, initialised


def _write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def fitness(metrics: dict) -> float:
    """ultralytics' model selection: 0.9 * mAP50-95 + 0.1 * mAP50."""
    return 0.9 * float(metrics.get("mAP50-95", 0.0)) + 0.1 * float(metrics.get("mAP50", 0.0))


def train(detector, data, epochs: int | None = None, imgsz: int | None = None, batch: int | None = None,
          out_dir="runs/train", overrides: dict | None = None, cfg_file=None,
          hooks: dict[str, list[Callable]] | None = None, teacher=None, stage: str = "train",
          resume_state: dict | None = None, teacher_source: str | None = None) -> dict:
    """Train ``detector`` in place on the YOLO dataset described by the data yaml ``data``.

    ``overrides`` are yolo_prune/defaults/train.yaml keys (unknown keys raise with a "did you mean"); ``sr`` > 0 turns on the BN-γ
    L1 penalty. ``teacher``: a Detector with the same head, for output distillation (weight ``distill_weight``).
    Writes ``out_dir/{last.pt,best.pt,results.csv,gamma_hist.png}`` (rank 0 only); the checkpoints and, at the
    end, ``detector`` itself hold the EMA weights. Returns a summary dict.
    """
    offline.apply()
    if resume_state is not None:
        cfg = dict(resume_state["cfg"])
    else:
        explicit = {k: v for k, v in {"epochs": epochs, "imgsz": imgsz, "batch": batch}.items() if v is not None}
        cfg = train_config.resolve({**(overrides or {}), **explicit}, cfg_file)  # None args keep the overrides
    out_dir = Path(out_dir)
    events = _hooks(hooks)
    rank, world, local_rank, device, we_init = _setup_distributed(cfg)
    main = rank in (-1, 0)
    try:
        if resume_state is not None:
            teacher_source = resume_state.get("teacher")
        return _run(detector, Path(data), cfg, out_dir, events, teacher, stage, resume_state, rank, world, device,
                    main, teacher_source)
    finally:
        if we_init:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(detector, data_yaml: Path, cfg, out_dir, events, teacher, stage, resume_state, rank, world, device, main,
         teacher_source):
    from tqdm import tqdm

    from ..data.yolo import augment_hyp, build_dataset, build_loader, load_data_yaml

    seed = int(cfg["seed"])
    _seed_all(seed)
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    data = load_data_yaml(data_yaml)
    if data["nc"] > detector.nc:
        raise ValueError(f"{data_yaml}: dataset has {data['nc']} classes but the model has {detector.nc}; give the "
                         f"model a new head with --nc auto (yolo_prune.train.sparse_train(..., nc='auto'), or "
                         f"yolo_prune.models.transfer.set_num_classes)")
    if detector.nc == data["nc"] and detector.names != data["names"]:
        default = {i: str(i) for i in range(detector.nc)}
        if detector.names != default:
            warnings.warn(f"{data_yaml}: class names {list(data['names'].values())[:5]}... replace the model's "
                          f"{list(detector.names.values())[:5]}...; the dataset defines the classes", stacklevel=3)
        detector.names = dict(data["names"])
        if isinstance(getattr(detector, "spec", None), dict):
            detector.spec["names"] = dict(data["names"])
    epochs, imgsz = int(cfg["epochs"]), int(cfg["imgsz"])
    if int(cfg["batch"]) < world:
        raise ValueError(f"training config 'batch': {cfg['batch']} is smaller than the {world} processes")
    batch = int(cfg["batch"]) // world  # per process
    stride = max(detector.strides)
    if imgsz % stride:
        raise ValueError(f"training config 'imgsz': {imgsz} must be a multiple of the model's largest stride {stride}")
    dataset = build_dataset(data, "train", imgsz, batch, cfg, augment=True, stride=stride)
    hyp = augment_hyp(cfg)
    loader = build_loader(dataset, batch, int(cfg["workers"]), seed, rank=max(rank, 0), world_size=world)
    nb = len(loader)
    calib_loader = None
    if main and int(cfg["bn_recalibrate"]) > 0 and not cfg["freeze_bn"]:  # only the main process evaluates
        calib_set = build_dataset(data, "train", imgsz, batch, cfg, augment=False, stride=stride)
        calib_loader = build_loader(calib_set, batch, 0, seed, shuffle=False)

    bns = prunable_bns(detector)  # traced on the CPU before moving; module references survive .to()
    detector.to(device)
    for name, p in detector.named_parameters():  # stripped checkpoints may freeze everything; DFL stays fixed
        p.requires_grad_(".dfl" not in name)
    criterion = build_loss(detector, cfg, imgsz)
    net: nn.Module = detector
    if world > 1:
        net = nn.parallel.DistributedDataParallel(detector, device_ids=[device.index] if device.type == "cuda" else None)
    if teacher is not None:
        from .distill import teacher_mode

        teacher = teacher_mode(teacher.to(device))

    nbs = int(cfg["nbs"])
    accumulate = max(round(nbs / (batch * world)), 1)
    optimizer = build_optimizer(detector, cfg, accumulate, batch * world)
    amp = bool(cfg["amp"]) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    ema = ModelEMA(detector, cfg["ema_decay"], cfg["ema_tau"]) if cfg["ema"] else None

    start_epoch, best_fit, history = 0, -1.0, []
    gamma_start = gammas(bns)
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        if ema is not None and resume_state.get("ema_state") is not None:
            ema.ema.load_state_dict(resume_state["ema_state"])
            ema.updates = int(resume_state["ema_updates"])
        if amp and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        start_epoch = int(resume_state["epoch"]) + 1
        best_fit = float(resume_state.get("best_fitness", -1.0))
        history = list(resume_state.get("history", []))
        if resume_state.get("gamma_start") is not None:
            gamma_start = resume_state["gamma_start"]
    if start_epoch >= epochs:
        raise ValueError(f"{out_dir}: training already finished ({start_epoch} of {epochs} epochs done)")

    state = LoopState(detector=detector, cfg=cfg, out_dir=out_dir, optimizer=optimizer, ema=ema, epochs=epochs,
                      history=history, bns=bns, rank=rank, world_size=world, epoch=start_epoch,
                      total_step=start_epoch * nb)
    if float(cfg["sr"]) > 0:
        # once per optimizer step, on unscaled and already clipped gradients: the penalty's strength is then
        # lr * sr per step whatever the data gradient's norm, accumulation or AMP scale
        events["before_step"].insert(0, SparsityHook(bns))
    targeted = None
    if cfg["sparsity"] == "targeted":
        targeted = TargetedSparsity(bns, cfg, nb)
        events["epoch_start"].insert(0, targeted.epoch_start)
        events["after_step"].insert(0, targeted.after_step)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    evaluate = _evaluator() if cfg["val"] else None
    nw = round(float(cfg["warmup_epochs"]) * nb) if float(cfg["warmup_epochs"]) > 0 else -1
    max_steps = int(cfg["max_steps"]) if cfg.get("max_steps") else None
    close_at = epochs - int(cfg["close_mosaic"])
    mosaic_closed = False
    for fn in events["train_start"]:
        fn(state)

    t_train = time.time()
    summary_metrics: dict = {}
    for epoch in range(start_epoch, epochs):
        t_epoch = time.time()
        state.epoch, state.sr = epoch, sr_at(epoch, cfg)
        _seed_all(seed + epoch)  # each epoch's data order and augmentation depend on (seed, epoch) only
        if epoch >= close_at and not mosaic_closed and float(cfg["mosaic"]) > 0:
            dataset.close_mosaic(hyp)
            mosaic_closed = True
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * lr_factor(epoch, cfg)
        net.train()
        if cfg["freeze_bn"]:
            freeze_bn_statistics(detector)
        for fn in events["epoch_start"]:
            fn(state)
        sums: dict[str, float] = {}
        pending = False  # gradients accumulated but not yet applied
        last_opt = nb * epoch - 1  # index of the last batch that stepped the optimizer
        shares = gamma_shares(bns)
        bar = tqdm(enumerate(loader), total=nb, desc=f"{stage} {epoch + 1}/{epochs}", disable=not main,
                   dynamic_ncols=True, leave=True)
        for i, b in bar:
            ni = i + nb * epoch
            state.step, state.total_step, state.batch = i, ni, b
            acc = accumulate
            if ni <= nw:  # warm-up: ramp LR (biases from warmup_bias_lr down) and momentum, accumulate less
                xi = [0, nw]
                acc = max(1, int(np.interp(ni, xi, [1, accumulate]).round()))
                for j, g in enumerate(optimizer.param_groups):
                    g["lr"] = float(np.interp(ni, xi, [float(cfg["warmup_bias_lr"]) if j == 0 else 0.0,
                                                       g["initial_lr"] * lr_factor(epoch, cfg)]))
                    if "momentum" in g:
                        g["momentum"] = float(np.interp(ni, xi, [float(cfg["warmup_momentum"]),
                                                                 float(cfg["momentum"])]))
            imgs = b["img"].to(device, non_blocking=True).float() / 255
            with torch.autocast(device_type=device.type, enabled=amp):
                raw = net(imgs)
                loss, items = criterion(raw, b)
                if teacher is not None:
                    from .distill import distill_loss

                    with torch.no_grad():
                        t_raw = teacher(imgs)
                    d = distill_loss(raw, t_raw) * float(cfg["distill_weight"])
                    loss = loss + d
                    items = {**items, "distill": float(d.detach()) / imgs.shape[0]}
            if world > 1:
                loss = loss * world  # DDP averages gradients over processes; the loss is a sum over images
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{stage} epoch {epoch + 1} batch {i}: loss is {float(loss)} "
                                         f"({items}); lower lr0 or check the labels")
            scaler.scale(loss).backward()
            pending = True
            state.loss, state.loss_items = loss.detach(), items
            state.grad_scale = float(scaler.get_scale()) if amp else 1.0
            for fn in events["after_backward"]:
                fn(state)
            if ni - last_opt >= acc:
                _optimizer_step(detector, optimizer, scaler, ema, cfg, state, events["before_step"])
                pending, last_opt = False, ni
                for fn in events["after_step"]:
                    fn(state)
            for k, v in items.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if main:
                if i % 10 == 0:
                    shares = gamma_shares(bns)
                post = {k: f"{v / (i + 1):.3f}" for k, v in sums.items()}
                if state.sr > 0 or bns:
                    post.update(sr=f"{state.sr:.1e}", **{"γ<1e-2": f"{shares['gamma<0.01']:.1%}"})
                if targeted is not None:
                    post["targeted"] = targeted.selected
                bar.set_postfix(post, refresh=False)
            if max_steps is not None and ni + 1 >= max_steps:
                state.stop = True
                break
        bar.close()
        if pending:  # never carry gradients into the next epoch: an epoch is a unit of resume
            _optimizer_step(detector, optimizer, scaler, ema, cfg, state, events["before_step"])
        n_batches = state.step + 1
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[1]["lr"], "sr": state.sr}
        row.update({f"loss_{k}": v / n_batches for k, v in sums.items()})
        row.update(gamma_shares(bns))
        if targeted is not None:
            row["targeted"] = targeted.selected
        metrics = {}
        eval_model = ema.ema if ema is not None else detector
        if main and calib_loader is not None:  # what is evaluated and saved gets statistics of its own weights
            recalibrate_bn(eval_model, calib_loader, device, max_batches=int(cfg["bn_recalibrate"]))
        if main and evaluate is not None:
            metrics = evaluate(eval_model, data=str(data_yaml), imgsz=imgsz, batch=int(cfg["val_batch"]),
                               device=str(device), max_images=cfg["val_max_images"], verbose=False)
            row.update({k: float(metrics[k]) for k in ("mAP50", "mAP50-95") if k in metrics})
        row["epoch_s"] = time.time() - t_epoch
        history.append(row)
        state.metrics, summary_metrics = metrics, metrics
        for fn in events["epoch_end"]:
            fn(state)
        if main:
            fit = fitness(metrics) if metrics else -float(sum(sums.values())) / n_batches  # no val: lowest loss
            is_best = fit > best_fit
            best_fit = max(best_fit, fit)
            _save(detector, ema, optimizer, scaler, cfg, epoch, best_fit, history, gamma_start, out_dir, stage,
                  data_yaml, metrics, is_best, teacher_source)
            _write_csv(history, out_dir / "results.csv")
            if bns:
                plot_gamma_hist(gamma_start, gammas(bns), out_dir / "gamma_hist.png",
                                title=f"BN γ, {stage}: start vs epoch {epoch + 1}")
            msg = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            print(f"{stage} epoch {epoch + 1}/{epochs}: {msg}", flush=True)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        if state.stop:
            break
    if ema is not None:  # the caller's Detector ends as the saved one: EMA weights (what best/last.pt hold)
        detector.load_state_dict(ema.ema.state_dict())
    for fn in events["train_end"]:
        fn(state)
    return {"out_dir": str(out_dir), "epochs_done": state.epoch + 1, "best_fitness": best_fit,
            "metrics": summary_metrics, "history": history, "gamma": gamma_shares(bns),
            "last": str(out_dir / "last.pt"), "best": str(out_dir / "best.pt"),
            "train_s": time.time() - t_train, "world_size": world}


def _optimizer_step(detector, optimizer, scaler, ema, cfg, state, before_step) -> None:
    scaler.unscale_(optimizer)
    if float(cfg["clip_grad"]) > 0:
        torch.nn.utils.clip_grad_norm_(detector.parameters(), max_norm=float(cfg["clip_grad"]))
    scale = state.grad_scale
    state.grad_scale = 1.0  # gradients are unscaled from here on
    for fn in before_step:
        fn(state)
    state.grad_scale = scale
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.update(detector)


def _evaluator():
    try:
        from yolo_prune.eval.coco import evaluate
    except ImportError as e:
        raise ImportError("per-epoch validation needs yolo_prune.eval.coco.evaluate, which could not be imported "
                          f"({e}); set val: false to train without validation") from e
    return evaluate


def _save(detector, ema, optimizer, scaler, cfg, epoch, best_fit, history, gamma_start, out_dir, stage, data_yaml,
          metrics, is_best, teacher_source) -> None:
    """last.pt (EMA weights as the model + full training state) and, when better, best.pt (model only)."""
    model = ema.ema if ema is not None else detector
    meta = {"stage": stage, "epoch": epoch + 1, "epochs": int(cfg["epochs"]), "imgsz": int(cfg["imgsz"]),
            "data": str(data_yaml), "metrics": {k: float(v) for k, v in metrics.items()
                                                if isinstance(v, (int, float))},
            "sr": float(cfg["sr"])}
    train_state = {
        "epoch": epoch, "cfg": dict(cfg), "optimizer": optimizer.state_dict(),
        "model": {k: v.detach().clone() for k, v in unwrap(detector).state_dict().items()},
        "ema_state": None if ema is None else {k: v.detach().clone() for k, v in ema.ema.state_dict().items()},
        "ema_updates": 0 if ema is None else ema.updates, "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "best_fitness": best_fit, "history": history, "gamma_start": gamma_start, "stage": stage,
        "data": str(data_yaml), "teacher": None if teacher_source is None else str(teacher_source),
        "sr": {"sr": float(cfg["sr"]), "schedule": cfg["sr_schedule"], "warmup": int(cfg["sr_warmup"]),
               "epochs": int(cfg["epochs"])},
    }
    ckpt_io.save(model, out_dir / "last.pt", meta=meta, train_state=train_state)
    if is_best:
        ckpt_io.save(model, out_dir / "best.pt", meta=meta)


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
        from ..models import load

        teacher = load(state["teacher"])
    return train(detector, state["data"], out_dir=run_dir, hooks=hooks, teacher=teacher, stage=state["stage"],
                 resume_state=state)
