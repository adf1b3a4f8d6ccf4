"""Physical removal of channels: each layer is cut by its handler (``yolo_prune.layers``)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..layers import registered_types, require_handler, set_module
from ..models.spec import fix_module_attributes


class _Surgeon:
    """``apply(module, keep_out, keep_in)`` for one registered layer class (kept for callers of ``SURGEONS``)."""

    def apply(self, m: nn.Module, keep_out, keep_in) -> nn.Module:
        return require_handler(m).cut(m, keep_out, keep_in)


class _Surgeons(Mapping):
    """A live view {layer class: surgeon} over the handler registry."""

    def __getitem__(self, cls):
        if cls not in registered_types():
            raise KeyError(cls)
        return _Surgeon()

    def __iter__(self):
        return iter(registered_types())

    def __len__(self):
        return len(registered_types())


SURGEONS = _Surgeons()


def surgeon_for(module: nn.Module):
    require_handler(module)
    return _Surgeon()


def removal_sets(graph, plan) -> tuple[dict, dict]:
    """Per layer: the out-side and in-side indices to drop."""
    rm_out: dict[str, set] = {}
    rm_in: dict[str, set] = {}
    for g in graph.groups:
        for k in plan.remove.get(g.gid, ()):
            for s in g.channels[k]:
                if s.role.cuts_out:
                    rm_out.setdefault(s.module, set()).add(s.index)
                if s.role.cuts_in:
                    rm_in.setdefault(s.module, set()).add(s.index)
    return rm_out, rm_in


def _kept(width: int, removed, device) -> torch.Tensor | None:
    if not removed:
        return None
    return torch.tensor([i for i in range(width) if i not in removed], dtype=torch.long, device=device)


def apply_plan(model: nn.Module, graph, plan) -> None:
    """Replace every affected layer with a smaller one holding the kept weights."""
    rm_out, rm_in = removal_sets(graph, plan)
    modules = dict(model.named_modules())
    for name in sorted(set(rm_out) | set(rm_in)):
        m = modules[name]
        handler = require_handler(m)
        (cin, cout), device = handler.widths(m), handler.device(m)
        new = handler.cut(m, _kept(cout, rm_out.get(name), device), _kept(cin, rm_in.get(name), device))
        set_module(model, name, new)
    fix_module_attributes(model)

