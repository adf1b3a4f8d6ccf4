"""Output distillation for fine-tuning a pruned student from its unpruned teacher, on the raw head outputs.

Pruning keeps the head's output channels, so student and teacher raw outputs have the same shapes.
* anchor-free (ultralytics dict: boxes (B, 4*reg_max, N), scores (B, nc, N)): BCE of the student's class logits
  towards the teacher's probabilities (minus their entropy, so a perfect copy scores 0), and KL divergence of the DFL box distributions weighted by the teacher's
  confidence; each normalised by the teacher's total confidence, as v8DetectionLoss normalises by its targets.
* anchor-based (list of (B, na, H, W, 5+nc)): BCE towards the teacher's objectness (mean over cells, like the
  objectness loss), BCE towards its class probabilities and MSE on the box logits, both weighted by the teacher's
  objectness.
The result is multiplied by the batch size, as the detection losses are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bn import freeze_bn_statistics


def teacher_mode(teacher: nn.Module) -> nn.Module:
    """Training mode for the raw head output, but BN uses running statistics and nothing updates them."""
    freeze_bn_statistics(teacher.train())
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def soft_bce(logits: torch.Tensor, target_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """BCE towards the teacher's probabilities minus their own entropy: a KL divergence, exactly 0 when student =
    teacher. The entropy is the same stable BCE-with-logits evaluated at the teacher's logits: an entropy from
    clamped probabilities overstated it for confident negatives (p < 1e-6), so a model's gap to itself was
    negative (-0.009 per image for a freshly built yolov8n, whose class priors are about 1e-5)."""
    target = target_logits.sigmoid()
    loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            - F.binary_cross_entropy_with_logits(target_logits, target, reduction="none"))
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _check_shapes(s: torch.Tensor, t: torch.Tensor, what: str) -> None:
    if s.shape != t.shape:
        raise ValueError(f"distillation: student {what} has shape {tuple(s.shape)}, teacher {tuple(t.shape)}; the "
                         "teacher must be the unpruned model of the same architecture and classes")


def distill_loss(student_raw, teacher_raw) -> torch.Tensor:
    if isinstance(student_raw, tuple) and len(student_raw) == 2 and isinstance(student_raw[1], dict):
        student_raw, teacher_raw = student_raw[1], teacher_raw[1]
    if isinstance(student_raw, dict):
        return _anchor_free(student_raw, teacher_raw)
    if len(student_raw) != len(teacher_raw):
        raise ValueError(f"distillation: student has {len(student_raw)} head outputs, teacher {len(teacher_raw)}")
    total = student_raw[0].new_zeros(())
    for i, (s, t) in enumerate(zip(student_raw, teacher_raw)):
        _check_shapes(s, t, f"head output {i}")
        t = t.detach().float()
        s = s.float()
        t_obj = t[..., 4].sigmoid()
        total = total + soft_bce(s[..., 4], t[..., 4])
        w = t_obj.unsqueeze(-1)
        norm = w.sum().clamp(min=1.0)
        if s.shape[-1] > 5:
            cls = soft_bce(s[..., 5:], t[..., 5:], reduction="none")
            total = total + (cls.mean(-1, keepdim=True) * w).sum() / norm
        total = total + (((s[..., :4] - t[..., :4]) ** 2).mean(-1, keepdim=True) * w).sum() / norm
    return total * student_raw[0].shape[0]


def _anchor_free(s: dict, t: dict) -> torch.Tensor:
    for key in ("boxes", "scores"):
        if key not in s or key not in t:
            raise ValueError(f"distillation: anchor-free raw output expected key {key!r}, found {sorted(s)}")
        _check_shapes(s[key], t[key], key)
    s_scores, t_scores = s["scores"].float(), t["scores"].detach().float()  # (B, nc, N) logits
    t_prob = t_scores.sigmoid()
    conf = t_prob.max(1)[0]  # (B, N)
    norm = t_prob.sum().clamp(min=1.0)
    cls = soft_bce(s_scores, t_scores, reduction="sum") / norm
    b, c, n = s["boxes"].shape
    s_log = s["boxes"].float().view(b, 4, c // 4, n).log_softmax(2)
    t_log = t["boxes"].detach().float().view(b, 4, c // 4, n).log_softmax(2)
    kl = (t_log.exp() * (t_log - s_log)).sum(2).mean(1)  # (B, N)
    box = (kl * conf).sum() / conf.sum().clamp(min=1.0)
    return (cls + box) * b
