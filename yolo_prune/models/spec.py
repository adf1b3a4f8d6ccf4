"""Per-layer width specs: how a pruned architecture is written down and rebuilt (timm style).

A checkpoint stores the family's base architecture (yaml dict or darknet cfg text) plus ``layers``: the shape of
every Conv2d / BatchNorm2d / Linear. Rebuilding builds the base, then swaps in modules of the recorded shapes
before the weights are loaded, so a pruned model never depends on pickled classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CompensatedConv2d(nn.Conv2d):
    """A Conv2d that also adds the contribution of removed, constant input channels.

    ``compensation`` (out, 1, kh, kw) is Σ_j c_j · w[:, j] over the removed inputs j with constant value c_j.
    Running it over a plane of ones with the conv's own stride/padding reproduces exactly what those channels
    contributed, zero-padded borders included.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("compensation", torch.zeros(self.out_channels, 1, *self.kernel_size,
                                                         device=self.weight.device, dtype=self.weight.dtype))

    @classmethod
    def from_conv(cls, m: nn.Conv2d) -> "CompensatedConv2d":
        new = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                  m.bias is not None, m.padding_mode, device="meta", dtype=m.weight.dtype).to_empty(
                      device=m.weight.device)
        new.weight.data.copy_(m.weight.detach())
        new.weight.requires_grad_(m.weight.requires_grad)
        if m.bias is not None:
            new.bias.data.copy_(m.bias.detach())
            new.bias.requires_grad_(m.bias.requires_grad)
        new.compensation.zero_()
        new.train(m.training)
        return new

    def forward(self, x):
        ones = torch.ones_like(x[:1, :1])
        return super().forward(x) + F.conv2d(ones, self.compensation, None, self.stride, self.padding,
                                             self.dilation)


def record_layers(model: nn.Module) -> dict:
    """Shapes of every Conv2d, BatchNorm2d and Linear, keyed by module name."""
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            layers[name] = {"type": type(m).__name__ if isinstance(m, CompensatedConv2d) else "Conv2d", "in": m.in_channels, "out": m.out_channels, "groups": m.groups,
                           "bias": m.bias is not None}
        elif isinstance(m, nn.BatchNorm2d):
            layers[name] = {"type": "BatchNorm2d", "num_features": m.num_features}
        elif isinstance(m, nn.Linear):
            layers[name] = {"type": "Linear", "in": m.in_features, "out": m.out_features,
                           "bias": m.bias is not None}
    return layers


def resized_conv(m: nn.Conv2d, cin: int, cout: int, groups: int, bias: bool | None = None) -> nn.Conv2d:
    bias = m.bias is not None if bias is None else bias
    # built on the meta device: the caller overwrites the weights, so skip the costly random init
    cls = CompensatedConv2d if isinstance(m, CompensatedConv2d) else nn.Conv2d
    new = cls(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, groups, bias,
                    m.padding_mode, device="meta", dtype=m.weight.dtype).to_empty(device=m.weight.device)
    new.weight.requires_grad_(m.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(m.weight.requires_grad if m.bias is None else m.bias.requires_grad)
    return new


def resized_bn(m: nn.BatchNorm2d, n: int) -> nn.BatchNorm2d:
    ref = m.weight if m.weight is not None else m.running_mean
    new = nn.BatchNorm2d(n, m.eps, m.momentum, m.affine, m.track_running_stats, device=ref.device, dtype=ref.dtype)
    if m.affine:
        new.weight.requires_grad_(m.weight.requires_grad)
        new.bias.requires_grad_(m.bias.requires_grad)
    new.train(m.training)
    return new


def resized_linear(m: nn.Linear, fin: int, fout: int, bias: bool | None = None) -> nn.Linear:
    bias = m.bias is not None if bias is None else bias
    new = nn.Linear(fin, fout, bias, device="meta", dtype=m.weight.dtype).to_empty(device=m.weight.device)
    new.weight.requires_grad_(m.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(m.weight.requires_grad if m.bias is None else m.bias.requires_grad)
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
    """Swap in modules with the recorded shapes (their weights are uninitialised until a state_dict is loaded).

    Errors name the layer and what was expected vs found.
    """
    from .validate import check_modules

    modules = dict(model.named_modules())
    _check_layer_shapes(layers, modules, source)
    for name, shape in layers.items():
        m = modules.get(name)
        kind = shape.get("type")
        if kind in ("Conv2d", "CompensatedConv2d") and isinstance(m, nn.Conv2d):
            bias = shape.get("bias", m.bias is not None)
            if kind == "CompensatedConv2d" and not isinstance(m, CompensatedConv2d):
                m = CompensatedConv2d.from_conv(m)
                set_module(model, name, m)
            if (m.in_channels, m.out_channels, m.groups, m.bias is not None) != \
                    (shape["in"], shape["out"], shape["groups"], bias):
                set_module(model, name, resized_conv(m, shape["in"], shape["out"], shape["groups"], bias))
        elif kind == "BatchNorm2d" and isinstance(m, nn.BatchNorm2d):
            if m.num_features != shape["num_features"]:
                set_module(model, name, resized_bn(m, shape["num_features"]))
        elif kind == "Linear" and isinstance(m, nn.Linear):
            bias = shape.get("bias", m.bias is not None)
            if (m.in_features, m.out_features, m.bias is not None) != (shape["in"], shape["out"], bias):
                set_module(model, name, resized_linear(m, shape["in"], shape["out"], bias))
        else:
            raise ValueError(f"{source}: layer '{name}' expected a {kind}, found {type(m).__name__}")
    fix_module_attributes(model)
    check_modules(model, source)


_SHAPE_KEYS = {"Conv2d": ("in", "out", "groups"), "CompensatedConv2d": ("in", "out", "groups"),
               "BatchNorm2d": ("num_features",), "Linear": ("in", "out")}


def _check_layer_shapes(layers: dict, modules: dict, source: str) -> None:
    """Every recorded width a bounded positive integer, groups dividing both sides, parameters within the limit,
    checked before any resized module is allocated."""
    from .validate import ModelSpecError, _over, check_int, limits

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
        else:
            total += 4 * vals[0]
        if total > lim.max_params:
            raise _over(source, f"layers (at '{name}')", "max_params", lim.max_params, f"{total:,} parameters")
