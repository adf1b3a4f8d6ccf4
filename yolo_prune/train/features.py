"""Feature distillation: the pruned student's BN outputs matched to the teacher's kept channels, layer by layer.

Head-output distillation gives one weak signal per image; a pruned student still holds a channel subset of its
teacher at every normalisation layer (the prune plan says which), so each BN output (the pre-activation feature)
has a dense target: the teacher's same channels. The loss is the mean squared difference per layer, divided by
the teacher channel's variance on the batch (so layers of every scale weigh alike; floored at 1 % of the layer's
mean variance, so a near-constant channel cannot dominate), averaged over layers. It is
the reconstruction objective of ``prune.reconstruct`` trained jointly through the whole network instead of one
layer at a time.

``removed`` is the prune report's ``plan["layers"]`` ({layer name: removed output positions}); a layer the plan
does not name must have its teacher's width.
"""
from __future__ import annotations

import torch
from torch import nn

NORM_TYPES = (nn.BatchNorm2d,)


def feature_pairs(student: nn.Module, teacher: nn.Module, removed: dict | None) -> dict[str, torch.Tensor | None]:
    """{norm layer name: teacher channels the student kept (None: all)} for every norm layer both models have.

    A layer whose width changed but that ``removed`` does not name is an error: its channels cannot be paired.
    """
    removed = removed or {}
    teachers = dict(teacher.named_modules())
    pairs: dict[str, torch.Tensor | None] = {}
    for name, s in student.named_modules():
        t = teachers.get(name)
        if not isinstance(s, NORM_TYPES) or not isinstance(t, NORM_TYPES):
            continue
        gone = set(int(i) for i in removed.get(name, ()))
        if any(i < 0 or i >= t.num_features for i in gone):
            raise ValueError(f"feature distillation: plan removes channels outside {name}'s {t.num_features}")
        kept = [i for i in range(t.num_features) if i not in gone]
        if len(kept) != s.num_features:
            raise ValueError(f"feature distillation: {name} has {s.num_features} channels, the teacher "
                             f"{t.num_features} and the plan removes {len(gone)}: the student must be a checkpoint "
                             "written by prune.py (it carries the plan) pruned from this teacher")
        pairs[name] = None if not gone else torch.tensor(kept, dtype=torch.long)
    if not pairs:
        raise ValueError("feature distillation: student and teacher share no normalisation layer by name")
    return pairs


class FeatureTaps:
    """Forward hooks on the paired norm layers of both models; ``loss()`` after one forward of each.

    Use as a context manager so the hooks are removed even after an error.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, removed: dict | None = None):
        self.pairs = feature_pairs(student, teacher, removed)
        self._models = (student, teacher)
        self._seen: tuple[dict, dict] = ({}, {})
        self._handles: list = []

    def __enter__(self) -> "FeatureTaps":
        for side, model in enumerate(self._models):
            modules = dict(model.named_modules())
            for name in self.pairs:
                self._handles.append(modules[name].register_forward_hook(self._keep(side, name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()

    def _keep(self, side: int, name: str):
        def hook(_module, _inputs, output):
            self._seen[side][name] = output
        return hook

    def clear(self) -> None:
        for seen in self._seen:
            seen.clear()

    def loss(self) -> torch.Tensor:
        """Mean over layers of the variance-normalised squared error; clears what the hooks saw."""
        student, teacher = self._seen
        missing = [n for n in self.pairs if n not in student or n not in teacher]
        if missing:
            raise RuntimeError(f"feature distillation: no forward output seen for {missing[:3]}")
        total = None
        for name, kept in self.pairs.items():
            t = teacher[name].detach().float()
            t = t if kept is None else t.index_select(1, kept.to(t.device))
            s = student[name].float()
            var = t.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
            # a near-constant teacher channel would otherwise outweigh the whole layer: floor at 1 % of its mean
            var = var.clamp(min=float(var.mean()) * 1e-2 + 1e-8)
            term = ((s - t) ** 2 / var).mean()
            total = term if total is None else total + term
        self.clear()
        return total / len(self.pairs)
