"""The layer-handler interface and its registry (one handler per layer type, looked up by the module's class).

A handler is everything the engine knows about one kind of layer: how one call passes channel labels in the
trace (``graph/trace.py``), its MACs (``prune/plan.py``, ``eval/profile.py``), its widths (``prune/api.py``),
how its shape is recorded in and rebuilt from a checkpoint (``models/spec.py``), how it is cut
(``prune/surgery.py``) and whether β compensation can fold into it (``prune/compensate.py``). Those modules ask
``handler_for(module)`` instead of testing types, so a new layer type is one subclass + ``@register``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .roles import Role


@dataclass(frozen=True)
class ChannelFlow:
    """How one call of a layer maps the channel labels of its input (dim 1) to its output.

    ``out_role`` None means pass-through: output channel j is input channel j (BN, depthwise conv, GroupNorm).
    ``block`` > 1 couples runs of that many consecutive channels (a GroupNorm group is removed whole).
    ``fixed``: the layer keeps every channel, in and out (why). ``input_fixed``: the input's channels cannot be
    followed (why), but the layer's own outputs are still free.
    """
    in_role: Role | None = None
    out_role: Role | None = None
    block: int = 1
    fixed: str | None = None
    input_fixed: str | None = None


class LayerHandler:
    """Base class: a layer the engine knows. Subclasses override what differs; see the module docstring."""
    module_type: type = nn.Module  # set by @register
    kind: str = ""                 # the "type" a checkpoint's layer spec records
    ops: frozenset = frozenset()   # aten ops one call of the layer dispatches
    computes = False               # does multiply-accumulates (counted in MACs, may consume removed channels)

    def accepts(self, m: nn.Module) -> bool:
        """More than one handler may share a class (dense / depthwise / grouped Conv2d): the first that accepts."""
        return True

    # -- trace -------------------------------------------------------------------------------------------
    def trace_keys(self, m: nn.Module) -> dict:
        """{tensor.data_ptr(): is_aux} of the tensors that identify this layer's ops in the trace.

        An aux tensor is a per-output-channel term computed by a separate op (CompensatedConv2d's border term):
        its result carries the layer's output labels.
        """
        return {}

    def operands(self, op: str, args) -> tuple:
        """(input tensor, identifying tensor) of one of ``ops``."""
        return args[0], args[1]

    def channel_flow(self, m: nn.Module, x: torch.Tensor, args) -> ChannelFlow:
        raise NotImplementedError

    def note_call(self, tracer, name: str, m: nn.Module, args, x, y) -> None:
        """Per-type bookkeeping after a traced call (spatial size for MACs, conv -> BN link)."""

    # -- widths and cost ---------------------------------------------------------------------------------
    def widths(self, m: nn.Module) -> tuple[int, int]:
        raise NotImplementedError

    def macs(self, m: nn.Module, positions: int, cin: int, cout: int) -> int:
        """Multiply-accumulates of one call at ``positions`` output positions with ``cin``/``cout`` channels."""
        return 0

    def call_macs(self, m: nn.Module, out: torch.Tensor) -> int:
        """MACs of one observed call (a forward hook's output)."""
        cin, cout = self.widths(m)
        return self.macs(m, out.numel() // max(cout, 1), cin, cout)

    # -- checkpoint spec ---------------------------------------------------------------------------------
    def record(self, m: nn.Module) -> dict:
        raise NotImplementedError

    def can_rebuild(self, m: nn.Module) -> bool:
        """``m`` (built from the base architecture) is a layer this kind can be rebuilt from."""
        return isinstance(m, self.module_type)

    def rebuild(self, m: nn.Module, shape: dict) -> nn.Module | None:
        """A module of the recorded ``shape`` replacing ``m`` (None: ``m`` already has it)."""
        raise NotImplementedError

    # -- surgery -----------------------------------------------------------------------------------------
    def cut(self, m: nn.Module, keep_out: torch.Tensor | None, keep_in: torch.Tensor | None) -> nn.Module:
        """A smaller copy of ``m`` holding the kept indices (None: that side keeps everything)."""
        raise NotImplementedError

    def device(self, m: nn.Module) -> torch.device:
        return next(iter(m.state_dict().values())).device

    # -- β compensation ----------------------------------------------------------------------------------
    def consumes_constants(self, m: nn.Module) -> bool:
        """Removed constant input channels of this layer can be folded into its output (bias)."""
        return False

    def absorbs_shift(self, m: nn.Module) -> bool:
        """A per-channel constant added before this layer can be folded into it (BN's running_mean)."""
        return False

    def fold_shift(self, m: nn.Module, delta: torch.Tensor) -> None:
        raise NotImplementedError


def kept(keep: torch.Tensor | None, n: int) -> torch.Tensor:
    """The kept indices of a side of width ``n`` (None: all of them)."""
    return keep if keep is not None else torch.arange(n)


def copy_kept(new: nn.Module, m: nn.Module, keep_out: torch.Tensor, keep_in: torch.Tensor | None = None) -> nn.Module:
    """Copy the kept rows (and columns) of ``m``'s weight and the kept entries of its bias into ``new``."""
    w = m.weight.detach()[keep_out]
    new.weight.data.copy_(w if keep_in is None else w[:, keep_in])
    if m.bias is not None:
        new.bias.data.copy_(m.bias.detach()[keep_out])
    return new


_BY_TYPE: dict[type, list[LayerHandler]] = {}
_BY_KIND: dict[str, LayerHandler] = {}


def register(module_type: type):
    """Class decorator: register one handler instance for ``module_type`` (and, first come, for its kind)."""
    def deco(cls):
        handler = cls()
        handler.module_type = module_type
        _BY_TYPE.setdefault(module_type, []).append(handler)
        if cls.kind:
            _BY_KIND.setdefault(cls.kind, handler)
        return cls
    return deco


def handler_for(m: nn.Module) -> LayerHandler | None:
    """The handler of the most specific registered class of ``m`` that accepts it; None for other layers."""
    for cls in type(m).__mro__:
        for handler in _BY_TYPE.get(cls, ()):
            if handler.accepts(m):
                return handler
    return None


def require_handler(m: nn.Module) -> LayerHandler:
    handler = handler_for(m)
    if handler is None:
        raise TypeError(f"no pruning handler registered for layer type {type(m).__name__}")
    return handler


def handler_for_kind(kind) -> LayerHandler | None:
    """The handler that rebuilds a checkpoint layer recorded with ``"type": kind``."""
    return _BY_KIND.get(kind) if isinstance(kind, str) else None


def registered_types() -> list[type]:
    return list(_BY_TYPE)


def layer_ops() -> dict:
    """{aten op name: a handler that reads its operands} over every registered handler."""
    ops = {}
    for handlers in _BY_TYPE.values():
        for handler in handlers:
            for op in handler.ops:
                ops.setdefault(op, handler)
    return ops


def layer_widths(model) -> dict:
    """{layer: [in, out]} of every layer a handler knows (Conv2d/Linear; [n, n] for BatchNorm2d/GroupNorm)."""
    widths = {}
    for name, m in model.named_modules():
        handler = handler_for(m)
        if handler is not None:
            widths[name] = list(handler.widths(m))
    return widths
