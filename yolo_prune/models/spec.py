"""Per-layer width specs: how a pruned architecture is written down and rebuilt (timm style).

A checkpoint stores the family's base architecture (yaml dict or darknet cfg text) plus ``layers``: the shape of
every layer a ``yolo_prune.layers`` handler knows (Conv2d, BatchNorm2d, Linear, GroupNorm). Rebuilding builds
the base, then swaps in modules of the recorded shapes before the weights are loaded, so a pruned model never
depends on pickled classes.
"""
from __future__ import annotations

from torch import nn

# the layer classes and constructors live with their handlers; re-exported here for existing callers
from ..layers import CompensatedConv2d, resized_bn, resized_conv, resized_linear, set_module  # noqa: F401
from ..layers import handler_for, handler_for_kind
from .validate import ModelSpecError, _over, check_int, check_modules, limits


def record_layers(model: nn.Module) -> dict:
    """Shapes of every layer a handler knows (Conv2d, BatchNorm2d, Linear, GroupNorm...), keyed by module name."""
    layers = {}
    for name, m in model.named_modules():
        handler = handler_for(m)
        if handler is not None:
            layers[name] = handler.record(m)
    return layers


def fix_module_attributes(model: nn.Module) -> None:
    """Refresh attributes that cache channel counts (ultralytics C2f/C3k2/C2PSA ``c``)."""
    for m in model.modules():
        cv1 = getattr(m, "cv1", None)
        if hasattr(m, "c") and isinstance(getattr(m, "c"), int) and cv1 is not None:
            conv = getattr(cv1, "conv", cv1)
            if isinstance(conv, nn.Conv2d) and type(m).__name__ in {"C2f", "C3k2", "C2PSA", "C2fPSA", "C2fAttn"}:
                m.c = conv.out_channels // 2


def apply_layers(model: nn.Module, layers: dict, source: str = "spec") -> None:
    """Swap in modules with the recorded shapes (their weights are uninitialised until a state_dict is loaded).

    Errors name the layer and what was expected vs found.
    """
    modules = dict(model.named_modules())
    _check_layer_shapes(layers, modules, source)
    for name, shape in layers.items():
        m = modules.get(name)
        if m is None:
            raise ValueError(f"{source}: layer '{name}' from the spec does not exist in the rebuilt model")
        kind = shape.get("type") if isinstance(shape, dict) else None
        handler = handler_for_kind(kind)
        if handler is None or not handler.can_rebuild(m):
            raise ValueError(f"{source}: layer '{name}' expected a {kind}, found {type(m).__name__}")
        try:
            new = handler.rebuild(m, shape)
        except KeyError as e:
            raise ValueError(f"{source}: layer '{name}' ({kind}) is missing field {e}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: layer '{name}' ({kind}): {e}") from None
        if new is not None and new is not m:
            set_module(model, name, new)
    fix_module_attributes(model)
    check_modules(model, source)


_SHAPE_KEYS = {"Conv2d": ("in", "out", "groups"), "CompensatedConv2d": ("in", "out", "groups"),
               "BatchNorm2d": ("num_features",), "Linear": ("in", "out"),
               "GroupNorm": ("num_groups", "num_channels")}


def _check_layer_shapes(layers: dict, modules: dict, source: str) -> None:
    """Every recorded width a bounded positive integer, groups dividing both sides, parameters within the limit,
    checked before any resized module is allocated."""
    lim = limits()
    total = 0
    for name, shape in layers.items():
        if not isinstance(shape, dict) or shape.get("type") not in _SHAPE_KEYS:
            raise ModelSpecError(f"{source}: spec layer '{name}': expected a mapping with 'type' one of "
                                 f"{sorted(_SHAPE_KEYS)}, found {shape!r}"[:300])
        if name not in modules:
            raise ModelSpecError(f"{source}: layer '{name}' from the spec does not exist in the rebuilt model")
        vals = [check_int(shape.get(k), source, f"layers.{name}.{k}", 1, lim.max_channels, "max_channels")
                for k in _SHAPE_KEYS[shape["type"]]]
        if "bias" in shape and not isinstance(shape["bias"], bool):
            raise ModelSpecError(f"{source}: field 'layers.{name}.bias': expected true/false, found {shape['bias']!r}")
        m = modules[name]
        if shape["type"].endswith("Conv2d"):
            cin, cout, groups = vals
            if cin % groups or cout % groups:
                raise ModelSpecError(f"{source}: field 'layers.{name}.groups': {groups} must divide in={cin} and "
                                     f"out={cout}")
            k = m.kernel_size if isinstance(m, nn.Conv2d) else (1, 1)
            total += cout * (cin // groups) * k[0] * k[1]
        elif shape["type"] == "Linear":
            total += vals[0] * vals[1]
        elif shape["type"] == "GroupNorm":
            total += 2 * vals[1]
        else:
            total += 4 * vals[0]
        if total > lim.max_params:
            raise _over(source, f"layers (at '{name}')", "max_params", lim.max_params, f"{total:,} parameters")
