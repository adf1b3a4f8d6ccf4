"""Params and MACs (GFLOPs = 2 x MACs), counted with forward hooks on one dummy forward."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def profile(model: nn.Module, imgsz: int | tuple[int, int] = 640, batch: int = 1) -> dict:
    """Count parameters and multiply-accumulates of Conv/Linear layers for one image of ``imgsz``.

    Returns {"params", "macs", "gflops"}; ``macs`` are per batch of ``batch`` images.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    macs = 0

    def hook(m, inp, out):
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            macs += out.numel() * k
        elif isinstance(m, nn.Linear):
            macs += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else "cpu"
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    try:
        model.eval()
        model(torch.zeros(batch, 3, h, w, device=device, dtype=dtype))
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return {"params": int(params), "macs": int(macs), "gflops": 2 * macs / 1e9}
