#!/usr/bin/env python
"""Experiment (not an option; it lost, see docs/BENCHMARKS.md): rank channels across groups by a measured
output sensitivity instead of the group mean, then prune with reconstruction and score on coco128 val.

    python benchmarks/sensitivity_allocation.py --targets 0.9 0.8 --rows reconstruct:l2 reconstruct:measured \
        --no-unpruned --distill --out runs/bench/sens_alloc

It is ``benchmarks/prune_recon.py`` (same flags, same rows and scoring) with one more criterion registered.

The criterion ``measured`` (registered here through the criterion registry, as a user's own criterion would be):
the prediction change when each group's weakest channels are replaced by their mean (what β compensation leaves
of a removed channel), one group at a time.

Why it was tried: weight criteria rank channels well *within* a layer but say little about how layers compare;
dividing by the group mean treats a channel of the last P5 convs, which the detection head reads almost directly,
like one of an early layer whose loss later layers can absorb. On the official yolov5n at 0.9x MACs the group-mean
l2 ranking took 88 of 256 channels from ``model.23.cv3`` (the P5 head's input) and 48 of 128 from ``model.21``.

The damage is measured on the decoded predictions (every family's eval-mode output: boxes in pixels and class
scores), so it needs no labels and no family loss:

    damage = [ Σ (s' - s)²  +  Σ_n conf_n · |b'_n - b_n|² / (w_n² + h_n² + 1) ] / Σ_n conf_n

with s the class scores, b the (cx, cy, w, h) box and conf_n the unpruned model's best class score of
prediction n.
"""
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.layers import Role, kept_modes  # noqa: E402
from yolo_prune.prune.importance import _CRITERIA, Criterion, register_criterion  # noqa: E402


def prediction_damage(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """The damage of decoded predictions ``pred`` against ``ref`` ((B, N, 4 + nc) each), as the module says."""
    if pred.shape != ref.shape or pred.dim() != 3 or pred.shape[-1] < 5:
        raise ValueError(f"prediction damage: expected two (B, N, 4 + nc) tensors of one shape, found "
                         f"{tuple(pred.shape)} and {tuple(ref.shape)}")
    pred, ref = pred.double(), ref.double()
    conf = ref[..., 4:].max(-1).values
    scores = ((pred[..., 4:] - ref[..., 4:]) ** 2).sum()
    size = (ref[..., 2:4] ** 2).sum(-1) + 1.0
    boxes = (conf * ((pred[..., :4] - ref[..., :4]) ** 2).sum(-1) / size).sum()
    return float((scores + boxes) / conf.sum().clamp(min=1e-9))


def _replace_by_mean(index: list[int]):
    """Forward hook: the output channels ``index`` become their mean over the batch (and positions)."""
    idx = torch.tensor(sorted(set(index)), dtype=torch.long)

    def hook(_module, _inputs, out):
        dims = [0] + list(range(2, out.dim()))
        out = out.clone()
        sel = out[:, idx.to(out.device)]
        out[:, idx.to(out.device)] = sel.mean(dims, keepdim=True).expand_as(sel)
        return out
    return hook


def _weakest_outputs(group, scores: np.ndarray, fraction: float) -> dict[str, list[int]]:
    """{module: output channels} that carry the group's ``fraction`` lowest-scored positions: the BN features
    where the position has them (the channel as consumers see it), else the producing layer's outputs."""
    k = max(1, int(round(fraction * group.width)))
    out: dict[str, list[int]] = {}
    for pos in np.argsort(scores, kind="stable")[:k]:
        slots = group.bn_slots(int(pos)) or [s for s in group.channels[int(pos)] if s.role.produces
                                             and s.role is not Role.DW]
        for s in slots:
            out.setdefault(s.module, []).append(s.index)
    return out


@torch.no_grad()
def group_damage(model: nn.Module, graph, scores: list[np.ndarray], images: torch.Tensor, fraction: float = 0.25,
                 batch: int = 16) -> np.ndarray:
    """Per group of ``graph``: the prediction damage of replacing its ``fraction`` lowest-``scores`` positions by
    their mean on ``images`` (calibration images, no labels), the rest of the model unchanged."""
    modules = dict(model.named_modules())
    ref_param = next(model.parameters())
    chunks = [images[s:s + batch].to(ref_param.device, ref_param.dtype) for s in range(0, len(images), batch)]
    damage = np.zeros(len(graph.groups))
    with kept_modes(model):
        model.eval()
        refs = [model(x) for x in chunks]
        for gi, (group, s) in enumerate(zip(graph.groups, scores)):
            targets = _weakest_outputs(group, s, fraction)
            handles = [modules[m].register_forward_hook(_replace_by_mean(idx)) for m, idx in targets.items()]
            try:
                damage[gi] = sum(prediction_damage(model(x), r) * len(x) for x, r in zip(chunks, refs)) / len(images)
            finally:
                for h in handles:
                    h.remove()
    return damage


def calibrated_scores(scores: list[np.ndarray], damage: np.ndarray, fraction: float = 0.25) -> list[np.ndarray]:
    """Scores on one scale across groups: each group's scores multiplied so that its ``fraction`` lowest sum to
    the damage measured for removing them (the within-group order is the criterion's)."""
    out = []
    for s, d in zip(scores, damage):
        k = max(1, int(round(fraction * len(s))))
        low = float(np.sort(s)[:k].sum())
        out.append(s * (max(float(d), 1e-12) / low) if low > 0 else np.full(len(s), max(float(d), 1e-12)))
    return out


@register_criterion
class Measured(Criterion):
    """l2 within each group, and across groups the prediction damage measured on calibration images
    (``sensitivity``): each group's scores are scaled so that its weakest quarter sums to the damage of replacing
    those channels by their mean. Layers the head depends on keep their channels; layers whose loss the rest of the
    network does not notice give theirs."""
    name, relative, needs_calibration = "measured", False, True
    fraction = 0.25
    images = 32  # calibration images the damage is measured on (one forward per group each)

    def statistics(self, model, graph, images, positions, seed):
        modules = dict(model.named_modules())
        base = [_CRITERIA["l2"].scores(g, modules, None, None) for g in graph.groups]
        pick = np.linspace(0, len(images) - 1, min(self.images, len(images))).round().astype(int)
        damage = group_damage(model, graph, base, images[torch.as_tensor(np.unique(pick))], self.fraction)
        return {"damage": {g.gid: float(d) for g, d in zip(graph.groups, damage)}}

    def scores(self, group, modules, rng, stats):
        if stats is None or "damage" not in stats:
            raise ValueError("criterion measured needs calibration images (pass --calib)")
        base = _CRITERIA["l2"].scores(group, modules, rng, None)
        return calibrated_scores([base], np.array([stats["damage"][group.gid]]), self.fraction)[0]


def main() -> None:
    import prune_recon  # this folder: the benchmark that prunes, refits and scores each row
    prune_recon.main()


if __name__ == "__main__":
    main()
