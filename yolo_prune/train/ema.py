"""Exponential moving average of the weights (yolov5/ultralytics ModelEMA)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel."""
    return model.module if isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)) else model


class ModelEMA:
    """Keeps ``ema`` = decay * ema + (1 - decay) * model after each optimizer step.

    decay ramps up as ``decay * (1 - exp(-updates / tau))`` so early, fast-changing weights are not frozen in.
    Integer buffers (BN ``num_batches_tracked``) are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.updates, self.max_decay, self.tau = updates, decay, tau

    def decay(self) -> float:
        return self.max_decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay()
        src = unwrap(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach().to(v.dtype), alpha=1 - d)
            else:
                v.copy_(src[k])
