"""Per-layer width specs: how a pruned architecture is written down and rebuilt (timm style).

A checkpoint stores the family's base architecture (yaml dict or darknet cfg text) plus ``layers``: the shape of
every Conv2d / BatchNorm2d / Linear. Rebuilding builds the base, then swaps in modules of the recorded shapes
before the weights are loaded, so a pruned model never depends on pickled classes.
"""
from __future__ import annotations

from torch import nn


def record_layers(model: nn.Module) -> dict:
    """Shapes of every Conv2d, BatchNorm2d and Linear, keyed by module name."""
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            layers[name] = {"type": "Conv2d", "in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.BatchNorm2d):
            layers[name] = {"type": "BatchNorm2d", "num_features": m.num_features}
        elif isinstance(m, nn.Linear):
            layers[name] = {"type": "Linear", "in": m.in_features, "out": m.out_features}
    return layers


def resized_conv(m: nn.Conv2d, cin: int, cout: int, groups: int) -> nn.Conv2d:
    new = nn.Conv2d(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, groups, m.bias is not None,
                    m.padding_mode, device=m.weight.device, dtype=m.weight.dtype)
    new.weight.requires_grad_(m.weight.requires_grad)
    if m.bias is not None:
        new.bias.requires_grad_(m.bias.requires_grad)
    return new


def resized_bn(m: nn.BatchNorm2d, n: int) -> nn.BatchNorm2d:
    ref = m.weight if m.weight is not None else m.running_mean
    new = nn.BatchNorm2d(n, m.eps, m.momentum, m.affine, m.track_running_stats, device=ref.device, dtype=ref.dtype)
    if m.affine:
        new.weight.requires_grad_(m.weight.requires_grad)
        new.bias.requires_grad_(m.bias.requires_grad)
    new.train(m.training)
    return new


def resized_linear(m: nn.Linear, fin: int, fout: int) -> nn.Linear:
    new = nn.Linear(fin, fout, m.bias is not None, device=m.weight.device, dtype=m.weight.dtype)
    new.weight.requires_grad_(m.weight.requires_grad)
    if m.bias is not None:
        new.bias.requires_grad_(m.bias.requires_grad)
    return new


def set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def fix_module_attributes(model: nn.Module) -> None:
    """Refresh attributes that cache channel counts (ultralytics C2f/C3k2/C2PSA ``c``)."""
    for m in model.modules():
        cv1 = getattr(m, "cv1", None)
        if hasattr(m, "c") and isinstance(getattr(m, "c"), int) and cv1 is not None:
            conv = getattr(cv1, "conv", cv1)
            if isinstance(conv, nn.Conv2d) and type(m).__name__ in {"C2f", "C3k2", "C2PSA", "C2fPSA", "C2fAttn"}:
                m.c = conv.out_channels // 2


def apply_layers(model: nn.Module, layers: dict, source: str = "spec") -> None:
    """Swap in modules with the recorded shapes. Errors name the layer and what was expected vs found."""
    modules = dict(model.named_modules())
    for name, shape in layers.items():
        m = modules.get(name)
        if m is None:
            raise ValueError(f"{source}: layer '{name}' from the spec does not exist in the rebuilt model")
        kind = shape.get("type")
        if kind == "Conv2d" and isinstance(m, nn.Conv2d):
            if (m.in_channels, m.out_channels, m.groups) != (shape["in"], shape["out"], shape["groups"]):
                set_module(model, name, resized_conv(m, shape["in"], shape["out"], shape["groups"]))
        elif kind == "BatchNorm2d" and isinstance(m, nn.BatchNorm2d):
            if m.num_features != shape["num_features"]:
                set_module(model, name, resized_bn(m, shape["num_features"]))
        elif kind == "Linear" and isinstance(m, nn.Linear):
            if (m.in_features, m.out_features) != (shape["in"], shape["out"]):
                set_module(model, name, resized_linear(m, shape["in"], shape["out"]))
        else:
            raise ValueError(f"{source}: layer '{name}' expected a {kind}, found {type(m).__name__}")
    fix_module_attributes(model)
