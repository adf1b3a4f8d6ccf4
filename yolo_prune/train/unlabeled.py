"""Label-free distillation: fine-tune a pruned student to reproduce its unpruned teacher on unlabeled images.

No label is read: the only signal is the teacher's raw head output (``distill.distill_loss``: soft BCE on
objectness/class probabilities, box regression weighted by the teacher's confidence). Images are letterboxed
once (``prune.reconstruct.calibration_batch``) and augmented on the fly with what keeps a detector's function
intact without boxes to move: horizontal flips, random scale/translation (the same warp feeds student and
teacher, so the target moves with the image) and brightness/contrast jitter. Half of each batch (``mosaic``) is
2×2 mosaics of four random images: with a teacher as the target every composition is a valid new training image,
so a few hundred photos give many distinct scenes, objects at more scales and image borders inside the frame.

The learning rate warms up over the first 5 % and then follows a cosine over the *budget*: the larger of steps
done / ``epochs`` × steps and time spent / ``max_minutes``, so a run stopped by its time limit has annealed to 0
instead of ending mid-schedule at a high rate.

BN statistics are frozen while training (``teacher_mode``-style: train-mode head outputs, running statistics
used and not updated): a few hundred images estimate them worse than the full training set did, and a student
that starts from a reconstruction already matches the teacher's pre-BN statistics. ``recalibrate_bn=True``
re-estimates them on the un-augmented images after training, for students far from their teacher.

Each epoch reports the student-teacher gap: the distillation loss per image on the un-augmented images.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..layers import kept_modes
from .bn import freeze_bn_statistics
from .distill import distill_loss, teacher_mode
from .features import FeatureTaps


def _augment(x: torch.Tensor, gen: torch.Generator, scale: float = 0.25, translate: float = 0.1,
             jitter: float = 0.2) -> torch.Tensor:
    """Random hflip + scale/translate (affine warp, gray 114 border) + brightness/contrast, per image."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    s = 1 + (torch.rand(b, generator=gen) * 2 - 1) * scale
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * translate * 2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) / s
    theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    pad = 114 / 255
    out = F.grid_sample(x - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + pad
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter
    bias = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter / 2
    return ((out - 0.5) * gain + 0.5 + bias).clamp(0, 1).to(x)


def _mosaic(images: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` 2×2 mosaics, each of four random ``images`` at half size (the affine warp later zooms and shifts them,
    so the seam moves and objects appear at 0.5-1.5× their size)."""
    idx = torch.randint(len(images), (n, 4), generator=gen)
    h, w = images.shape[2:]
    small = F.interpolate(images[idx.reshape(-1)], size=(h // 2, w // 2), mode="bilinear", align_corners=False,
                          antialias=True).reshape(n, 4, 3, h // 2, w // 2)
    top = torch.cat([small[:, 0], small[:, 1]], 3)
    bottom = torch.cat([small[:, 2], small[:, 3]], 3)
    out = torch.cat([top, bottom], 2)
    return F.pad(out, (0, w - out.shape[3], 0, h - out.shape[2]), value=114 / 255)  # odd sizes: pad the last pixel


def _training_batch(images: torch.Tensor, order: torch.Tensor, mosaic: float, gen: torch.Generator) -> torch.Tensor:
    """The next batch: the images in ``order`` augmented, a ``mosaic`` share of them replaced by mosaics."""
    x = images[order]
    n_mosaic = int(round(mosaic * len(x)))
    if n_mosaic == 0:
        return _augment(x, gen)
    plain = _augment(x[n_mosaic:], gen) if n_mosaic < len(x) else x[:0]
    mixed = _augment(_mosaic(images, n_mosaic, gen), gen, scale=0.5)
    return torch.cat([mixed, plain])


class _Budget:
    """Training progress in [0, 1]: the larger of steps / planned steps and time / ``max_minutes`` (when given).

    The learning rate warms up linearly over the first ``warmup`` of the budget: Adam's first steps move every
    weight by about the full rate whatever its gradient, and without a warm-up the first epoch raised the
    student-teacher gap of a reconstructed yolov5n from 0.33 to 0.52 before training brought it down."""

    def __init__(self, steps: int, max_minutes: float | None, warmup: float = 0.05):
        self.steps, self.warmup, self.done_steps, self.t0 = steps, warmup, 0, time.time()
        self.seconds = None if max_minutes is None else 60 * max_minutes

    def fraction(self) -> float:
        f = self.done_steps / self.steps
        if self.seconds is not None:
            f = max(f, (time.time() - self.t0) / max(self.seconds, 1e-9))
        return min(f, 1.0)

    def lr_factor(self) -> float:
        f = self.fraction()
        ramp = min(1.0, (f + 1e-3) / self.warmup) if self.warmup > 0 else 1.0
        return ramp * 0.5 * (1 + math.cos(math.pi * f))


def _raw(model: nn.Module, x: torch.Tensor):
    """Raw head outputs: train-mode forward with frozen BN statistics."""
    return model(x)


def _freeze_bn(model: nn.Module) -> None:
    freeze_bn_statistics(model.train())


@torch.no_grad()
def student_teacher_gap(student: nn.Module, teacher: nn.Module, images: torch.Tensor, batch: int = 16) -> float:
    """Distillation loss per image on un-augmented ``images`` (0 when the student is a copy of the teacher)."""
    total = 0.0
    with kept_modes(student, teacher):
        _freeze_bn(student)
        _freeze_bn(teacher)
        for s in range(0, len(images), batch):
            x = images[s:s + batch]
            total += float(distill_loss(_raw(student, x), _raw(teacher, x)))
    return total / len(images)


def distill_unlabeled(student: nn.Module, teacher: nn.Module, images: torch.Tensor, *, epochs: int = 10,
                      batch: int = 16, lr: float = 2e-4, weight_decay: float = 0.0, max_minutes: float | None = None,
                      recalibrate_bn: bool = False, seed: int = 0, progress: bool = True, features: float = 0.0,
                      removed: dict | None = None, head: float = 1.0, mosaic: float = 0.5) -> dict:
    """Fine-tune ``student`` in place toward ``teacher`` on unlabeled ``images`` ((N, 3, H, W) in [0, 1]).

    AdamW with a cosine schedule over the budget (``epochs``, or ``max_minutes`` if that ends first: ``_Budget``).
    ``features`` > 0 adds that weight of feature distillation (``features.FeatureTaps``: every BN output against
    the teacher's kept channels, which ``removed``, the prune plan's ``plan["layers"]``, names); ``head`` weighs the
    head-output term; ``mosaic`` is the share of each batch made of 2×2 mosaics. Returns {"history": [{epoch, gap,
    loss, seconds}], "gap_before", "gap_after", ...}.
    """
    if images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"unlabeled images: expected (N, 3, H, W) with N >= 1, found {tuple(images.shape)}")
    if epochs < 1 or batch < 1 or not 0 <= mosaic <= 1:
        raise ValueError(f"distill_unlabeled: expected epochs >= 1, batch >= 1, 0 <= mosaic <= 1, found {epochs}, "
                         f"{batch}, {mosaic}")
    device = next(student.parameters()).device
    images = images.to(device)
    teacher = teacher_mode(teacher.to(device))
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in student.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    for p in params:  # stripped checkpoints may have requires_grad False
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    budget = _Budget(epochs * math.ceil(len(images) / batch), max_minutes)
    history = [{"epoch": 0, "gap": student_teacher_gap(student, teacher, images, batch), "seconds": 0.0}]
    taps = FeatureTaps(student, teacher, removed) if features > 0 else None
    step = _Step(student, teacher, opt, params, taps, head, features)
    try:
        with kept_modes(student), (taps or contextlib.nullcontext()):  # _freeze_bn leaves BN in eval: restore modes
            for epoch in range(1, epochs + 1):
                _freeze_bn(student)
                order = torch.randperm(len(images), generator=gen)
                bar = tqdm(range(0, len(images), batch), desc=f"distill {epoch}/{epochs}", disable=not progress,
                           leave=False)
                run_loss, seen = 0.0, 0
                for s in bar:
                    for g in opt.param_groups:
                        g["lr"] = lr * budget.lr_factor()
                    x = _training_batch(images, order[s:s + batch], mosaic, gen)
                    run_loss, seen = run_loss + step(x), seen + len(x)
                    budget.done_steps += 1
                    bar.set_postfix(loss=f"{run_loss / seen:.4f}")
                    if budget.fraction() >= 1:
                        break
                gap = student_teacher_gap(student, teacher, images, batch)
                history.append({"epoch": epoch, "loss": run_loss / seen, "gap": gap,
                                "seconds": time.time() - budget.t0})
                if progress:
                    print(f"distill epoch {epoch}/{epochs}: train loss {run_loss / seen:.4f}, "
                          f"student-teacher gap {gap:.4f} (start {history[0]['gap']:.4f})", flush=True)
                if budget.fraction() >= 1:
                    break
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    if recalibrate_bn:
        from .bn import recalibrate_bn as recal
        recal(student, (images[s:s + batch] for s in range(0, len(images), batch)))
        history.append({"epoch": "bn", "gap": student_teacher_gap(student, teacher, images, batch),
                        "seconds": time.time() - budget.t0})
    student.eval()
    return {"history": history, "gap_before": history[0]["gap"], "gap_after": history[-1]["gap"],
            "epochs": len([h for h in history if isinstance(h["epoch"], int)]) - 1, "images": len(images),
            "seconds": time.time() - budget.t0}


class _Step:
    """One optimiser step of the student on a batch: head-output (and feature) distillation; returns the loss."""

    def __init__(self, student, teacher, opt, params, taps, head: float, features: float):
        self.student, self.teacher, self.opt, self.params = student, teacher, opt, params
        self.taps, self.head, self.features = taps, head, features

    def __call__(self, x: torch.Tensor) -> float:
        with torch.no_grad():
            t_raw = _raw(self.teacher, x)
        loss = self.head * distill_loss(_raw(self.student, x), t_raw)
        if self.taps is not None:
            loss = loss + self.features * len(x) * self.taps.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 10.0)
        self.opt.step()
        return float(loss.detach())


def distill_unlabeled_checkpoint(weights, teacher, unlabeled, out, *, epochs: int = 10, imgsz: int = 320,
                                 batch: int = 16, images: int | None = 128, lr: float = 2e-4,
                                 max_minutes: float | None = None, recalibrate_bn: bool = False, seed: int = 0,
                                 device="cpu", features: float = 0.0) -> dict:
    """Load a pruned checkpoint and its teacher, distil on ``unlabeled`` (data yaml train split or image folder),
    write ``out`` (.pt, + the family's native files) and ``out``.json. Nothing is written on error.
    ``features`` > 0: feature distillation too, paired by the prune plan the checkpoint carries."""
    from ..io import atomic_write_json
    from ..models import load
    from ..models.checkpoint import save
    from ..models.native import write_native
    from ..prune.reconstruct import calibration_batch
    from ..versions import versions
    out = Path(out)
    if out.suffix != ".pt":
        raise ValueError(f"--out: expected a .pt path, found {out}")
    student, teach = load(weights, device=device), load(teacher, device=device)
    if teach.nc != student.nc:
        raise ValueError(f"{teacher}: teacher has {teach.nc} classes, the student {student.nc}")
    from ..eval.infer import model_stride
    data = calibration_batch(unlabeled, images, imgsz, model_stride(student))
    torch.manual_seed(seed)
    result = distill_unlabeled(student, teach, data, epochs=epochs, batch=batch, lr=lr, max_minutes=max_minutes,
                               recalibrate_bn=recalibrate_bn, seed=seed, features=features,
                               removed=student.prune_plan)
    meta = {"source": str(weights), "teacher": str(teacher), "unlabeled": str(unlabeled), "imgsz": imgsz,
            "stage": "distill_unlabeled", "versions": versions()}
    written = [save(student, out, meta=meta)]
    try:
        native = write_native(student, out)  # the family's own files, as its registry entry writes them
        written += native["files"]
        report = {"weights": str(weights), "teacher": str(teacher), "out": str(out), **result, "meta": meta,
                  "written": [str(p) for p in written], "notes": native["notes"]}
        atomic_write_json(out.with_suffix(".json"), report)
    except BaseException:
        for p in written:
            Path(p).unlink(missing_ok=True)
        raise
    return report
