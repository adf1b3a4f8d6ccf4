"""Label-free distillation: fine-tune a pruned student to reproduce its unpruned teacher on unlabeled images.

No label is read: the only signal is the teacher's raw head output (``distill.distill_loss``: soft BCE on
objectness/class probabilities, box regression weighted by the teacher's confidence). Images are letterboxed
once (``prune.reconstruct.calibration_batch``) and augmented on the fly with what keeps a detector's function
intact without boxes to move: horizontal flips, random scale/translation (the same warp feeds student and
teacher, so the target moves with the image) and brightness/contrast jitter.

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
                      removed: dict | None = None, head: float = 1.0) -> dict:
    """Fine-tune ``student`` in place toward ``teacher`` on unlabeled ``images`` ((N, 3, H, W) in [0, 1]).

    AdamW with a cosine schedule; stops early after ``max_minutes``. ``features`` > 0 adds that weight of feature
    distillation (``features.FeatureTaps``: every BN output against the teacher's kept channels, which
    ``removed``, the prune plan's ``plan["layers"]``, names); ``head`` weighs the head-output term. Returns {"history": [{epoch, gap, loss,
    seconds}], "gap_before", "gap_after", ...}.
    """
    if images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"unlabeled images: expected (N, 3, H, W) with N >= 1, found {tuple(images.shape)}")
    if epochs < 1 or batch < 1:
        raise ValueError(f"distill_unlabeled: epochs and batch must be >= 1, found {epochs}, {batch}")
    device = next(student.parameters()).device
    images = images.to(device)
    teacher = teacher_mode(teacher.to(device))
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in student.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    for p in params:  # stripped checkpoints may have requires_grad False
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(images) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    t0 = time.time()
    history = [{"epoch": 0, "gap": student_teacher_gap(student, teacher, images, batch), "seconds": 0.0}]
    taps = FeatureTaps(student, teacher, removed) if features > 0 else contextlib.nullcontext()
    try:
        with kept_modes(student), taps:  # _freeze_bn leaves BN layers in eval: restore each module's own mode
            for epoch in range(1, epochs + 1):
                _freeze_bn(student)
                order = torch.randperm(len(images), generator=gen)
                run_loss, seen = 0.0, 0
                bar = tqdm(range(0, len(images), batch), desc=f"distill {epoch}/{epochs}", disable=not progress,
                           leave=False)
                for s in bar:
                    x = _augment(images[order[s:s + batch]], gen)
                    with torch.no_grad():
                        t_raw = _raw(teacher, x)
                    loss = head * distill_loss(_raw(student, x), t_raw)
                    if features > 0:
                        loss = loss + features * len(x) * taps.loss()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 10.0)
                    opt.step()
                    sched.step()
                    run_loss += float(loss.detach())
                    seen += len(x)
                    bar.set_postfix(loss=f"{run_loss / seen:.4f}")
                gap = student_teacher_gap(student, teacher, images, batch)
                history.append({"epoch": epoch, "loss": run_loss / seen, "gap": gap, "seconds": time.time() - t0})
                if progress:
                    print(f"distill epoch {epoch}/{epochs}: train loss {run_loss / seen:.4f}, "
                          f"student-teacher gap {history[-1]['gap']:.4f} (start {history[0]['gap']:.4f})", flush=True)
                if max_minutes is not None and time.time() - t0 > 60 * max_minutes:
                    break
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    if recalibrate_bn:
        from .bn import recalibrate_bn as recal
        recal(student, (images[s:s + batch] for s in range(0, len(images), batch)))
        history.append({"epoch": "bn", "gap": student_teacher_gap(student, teacher, images, batch),
                        "seconds": time.time() - t0})
    student.eval()
    return {"history": history, "gap_before": history[0]["gap"], "gap_after": history[-1]["gap"],
            "epochs": len([h for h in history if isinstance(h["epoch"], int)]) - 1, "images": len(images),
            "seconds": time.time() - t0}


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
