"""Gradients for the first-order Taylor criterion, accumulated over batches and a loss that the CALLER gives.

``prune/`` does not know how a family is trained: the caller builds the batches and the loss (for a data yaml,
``yolo_prune.train.taylor.taylor_grad_fn`` does, with the family's own training loss) and passes the resulting
``grad_fn(model)`` to ``prune_model`` / ``prune_checkpoint``.
"""
from __future__ import annotations

from typing import Callable, Iterable


def accumulate_gradients(model, batches: Iterable, loss_fn: Callable, limit: int) -> None:
    """``loss_fn(model, batch).backward()`` for the first ``limit`` batches, in train mode, every parameter
    requiring grad (stripped checkpoints may have requires_grad False); both are restored afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)
    was_training = model.training
    model.train()
    try:
        for i, batch in enumerate(batches):
            if i >= limit:
                break
            loss_fn(model, batch).backward()
    finally:
        model.train(was_training)
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
