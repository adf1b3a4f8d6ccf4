"""Unstructured magnitude pruning (masks made permanent): for comparison only, it gives no speed-up."""
from __future__ import annotations

from torch import nn
from torch.nn.utils import prune as tprune


def prune_unstructured(model: nn.Module, amount: float, skip: set | None = None) -> dict:
    """Zero the ``amount`` smallest-|w| weights across all conv/linear layers (global L1), then make it permanent.

    ``skip``: layer names left dense (the detector's head outputs by default). Returns per-layer and global
    sparsity.
    """
    if not 0 < amount < 1:
        raise ValueError(f"amount: expected 0 < amount < 1, found {amount}")
    if skip is None:
        heads = getattr(model, "head_modules", None)
        skip = set(heads()) if callable(heads) else set()
    params = [(m, "weight") for n, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in skip and m.weight.requires_grad]
    if not params:  # stripped checkpoints have requires_grad False everywhere: take them all
        params = [(m, "weight") for n, m in model.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in skip]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    for m, p in params:
        tprune.remove(m, p)
    per_layer, zeros, total = {}, 0, 0
    names = {id(m): n for n, m in model.named_modules()}
    for m, _ in params:
        z = int((m.weight == 0).sum())
        per_layer[names[id(m)]] = z / m.weight.numel()
        zeros, total = zeros + z, total + m.weight.numel()
    return {"mode": "unstructured", "amount": amount, "global_sparsity": zeros / max(total, 1),
            "layer_sparsity": per_layer}
