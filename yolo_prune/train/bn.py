"""BatchNorm statistics recalibration (AdaBN-style): re-estimate running mean/var on real images, no gradients.

Running statistics follow the weights slowly (momentum 0.03 per batch in yolov5/ultralytics). When weights move
fast relative to the number of batches seen, as when sparsity training fades channels on a small dataset, the
stored statistics go stale and an evaluation in eval mode collapses although the training loss is fine.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..layers import kept_modes


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, device=None, max_batches: int | None = None) -> int:
    """Replace every BatchNorm's running statistics by their average over ``batches`` (ultralytics-style dicts
    with uint8 ``img``, or float image tensors in 0..1). Returns the number of batches used; weights and the
    model's train/eval mode are unchanged. With no batch at all the statistics are left as they were."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    device = device or next(model.parameters()).device
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.momentum, m.num_batches_tracked.clone())
             for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    n = 0
    try:
        with kept_modes(model):
            model.eval()
            for m in bns:
                m.train()
            for b in batches:
                if max_batches is not None and n >= max_batches:
                    break
                x = b["img"] if isinstance(b, dict) else b
                x = x.to(device, non_blocking=True)
                x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
                model(x)
                n += 1
    finally:
        for m, (mean, var, momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if n == 0:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
    return n


def freeze_bn_statistics(model: nn.Module) -> nn.Module:
    """Put every BatchNorm of ``model`` in eval mode (running statistics used, never updated) and leave the rest
    as it is; γ and β keep their gradients. Call it after each ``model.train()``."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model
