"""Gradients for the first-order Taylor criterion, accumulated over batches and a loss that the CALLER gives.

``prune/`` does not know how a family is trained: the caller builds the batches and the loss (for a data yaml,
``yolo_prune.train.taylor.taylor_grad_fn`` does, with the family's own training loss; without labels,
``pseudo_label_grad_fn`` scores the model against its own confident detections) and passes the resulting
``grad_fn(model)`` to ``prune_model`` / ``prune_checkpoint``.
"""
from __future__ import annotations

from typing import Callable, Iterable

from torch import nn

from ..layers import kept_modes


def accumulate_gradients(model, batches: Iterable, loss_fn: Callable, limit: int) -> None:
    """``loss_fn(model, batch).backward()`` for the first ``limit`` batches, in train mode, every parameter
    requiring grad (stripped checkpoints may have requires_grad False); both are restored afterwards, and so are
    the BatchNorm running statistics, which the train-mode batches would otherwise move before the cut.

    Train-mode BN (batch statistics) ranks better than eval-mode BN here: BCCD yolov5n at 0.5x MACs with
    reconstruct, 0.451 vs 0.411 mAP50-95 after the cut (docs/BENCHMARKS.md)."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in bns]
    try:
        with kept_modes(model):
            model.train()
            for i, batch in enumerate(batches):
                if i >= limit:
                    break
                loss_fn(model, batch).backward()
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        for m, buffers in zip(bns, saved):
            for k, v in buffers.items():
                getattr(m, k).copy_(v)
