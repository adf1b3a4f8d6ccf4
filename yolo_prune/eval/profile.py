"""Params and MACs (GFLOPs = 2 x MACs), counted with forward hooks on one dummy forward."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import handler_for
from ..layers import kept_modes


@torch.no_grad()
def profile(model: nn.Module, imgsz: int | tuple[int, int] = 640, batch: int = 1) -> dict:
    """Count parameters and multiply-accumulates of every computing layer (Conv/Linear) for one ``imgsz`` image.

    Returns {"params", "macs", "gflops"}; ``macs`` are per batch of ``batch`` images.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    macs = 0

    def hook(m, inp, out):
        nonlocal macs
        macs += handler_for(m).call_macs(m, out)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if handler_for(m) is not None and handler_for(m).computes]
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else "cpu"
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    try:
        with kept_modes(model):
            model.eval()
            model(torch.zeros(batch, 3, h, w, device=device, dtype=dtype))
    finally:
        for hd in handles:
            hd.remove()
    params = sum(p.numel() for p in model.parameters())
    return {"params": int(params), "macs": int(macs), "gflops": 2 * macs / 1e9}
