"""Darknet (AlexeyAB) models: the .cfg parser, the network, the .weights reader/writer and a pruned-cfg writer.

Semantics follow darknet's C code so that official cfg + .weights pairs give the same numbers:

* ``[convolutional]``: ``pad=1`` means ``padding = size // 2``; with ``batch_normalize=1`` the conv has no bias and
  the BN uses eps 1e-5 and momentum 0.01 (darknet keeps ``rolling = 0.99 * rolling + 0.01 * batch``).
* ``[route]``: negative indices are relative to the route itself; ``groups``/``group_id`` keep slice
  ``group_id`` of each input's channels (``torch.chunk``, which the pruning engine knows how to follow).
* ``[maxpool]``: darknet's default padding is ``size - 1`` with ``padding // 2`` on the top/left, so
  ``size=2 stride=1`` pads one row/column at the bottom/right only and keeps the spatial size.
* ``[yolo]``: ``xy = (sigmoid(t) * s - 0.5 * (s - 1) + grid) * stride``, ``wh = exp(t) * anchor``.
* ``.weights``: int32 major, minor, revision, then ``seen`` (int64 when major*10+minor >= 2, else int32), then
  float32 per conv: BN conv -> beta, gamma, running mean, running var, weights; plain conv -> bias, weights.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..io import atomic_write_chunks
from . import registry
from .detector import Detector
from .transfer import ClassConv
from .yolov5_legacy import class_bias as yolov5_class_bias
from .validate import _over, check_int, limits

__all__ = [
    "CfgSection", "parse_cfg", "DarknetNet", "DarknetDetector", "ConvLayer", "RouteLayer", "ShortcutLayer",
    "MaxPoolLayer", "UpsampleLayer", "YoloLayer", "build_darknet", "load_darknet", "read_weights",
    "write_weights", "write_cfg", "weights_float_count", "cfg_text_for", "FAMILY",
]

BN_EPS = 1e-5
BN_MOMENTUM = 0.01
LEAKY_SLOPE = 0.1

# canonical section name for every header darknet accepts for the layers we support
_SECTION_ALIASES = {
    "net": "net", "network": "net",
    "convolutional": "convolutional", "conv": "convolutional",
    "route": "route",
    "shortcut": "shortcut",
    "maxpool": "maxpool", "max": "maxpool",
    "upsample": "upsample",
    "yolo": "yolo",
}
_SECTION_KINDS = ("convolutional", "route", "shortcut", "maxpool", "upsample", "yolo")  # DarknetNet._make_<kind>
_SUPPORTED = "net, convolutional, route, shortcut, maxpool, upsample, yolo"
_ACTIVATIONS = ("leaky", "mish", "linear", "logistic", "relu", "swish")

# options that change what a layer computes but that this implementation does not support: refuse, never ignore
_UNSUPPORTED_OPTIONS = {
    "convolutional": {"dilation": "1", "stride_x": None, "stride_y": None, "antialiasing": "0", "xnor": "0",
                      "binary": "0", "share_index": None, "deform": "0", "sway": "0", "rotate": "0",
                      "stretch": "0", "stretch_sway": "0", "assisted_excitation": "0"},
    "maxpool": {"stride_x": None, "stride_y": None, "maxpool_depth": "0", "antialiasing": "0",
                "out_channels": None},
    "shortcut": {"weights_type": "none", "weights_normalization": "none"},
    "upsample": {"scale": "1"},
    "yolo": {"new_coords": "0"},
    "route": {},
    "net": {},
}


# ----------------------------------------------------------------------------------------------------------------
# cfg parsing


@dataclass
class CfgSection:
    """One ``[section]`` of a cfg: its canonical kind, the header line and ``key -> (value, line)``."""

    kind: str
    line: int
    options: dict = field(default_factory=dict)

    def where(self, source: str, key: str | None = None) -> str:
        line = self.options[key][1] if key is not None and key in self.options else self.line
        return f"{source}:{line}"

    def raw(self, key: str, default=None):
        return self.options[key][0] if key in self.options else default

    def get_int(self, key: str, default: int | None, source: str) -> int:
        value = self.raw(key)
        if value is None:
            if default is None:
                raise ValueError(f"{self.where(source)}: [{self.kind}] field '{key}' is required and missing")
            return default
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{self.where(source, key)}: [{self.kind}] field '{key}': expected an integer, "
                             f"found {value!r}") from None

    def get_float(self, key: str, default: float, source: str) -> float:
        value = self.raw(key)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{self.where(source, key)}: [{self.kind}] field '{key}': expected a number, "
                             f"found {value!r}") from None

    def get_list(self, key: str, source: str, kind=int, required: bool = False) -> list | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise ValueError(f"{self.where(source)}: [{self.kind}] field '{key}' is required and missing")
            return None
        items = [v.strip() for v in value.split(",") if v.strip()]
        try:
            return [kind(v) for v in items]
        except ValueError:
            what = "integers" if kind is int else "numbers"
            raise ValueError(f"{self.where(source, key)}: [{self.kind}] field '{key}': expected comma-separated "
                             f"{what}, found {value!r}") from None


def parse_cfg(text: str, source: str = "<cfg>") -> list[CfgSection]:
    """Parse darknet cfg text into sections (the first one is ``[net]``). Errors name ``source:line``."""
    if not isinstance(text, str):
        raise ValueError(f"{source}: expected darknet cfg text, found {type(text).__name__}")
    if len(text) > limits().max_text:
        raise _over(source, "cfg text", "max_text", limits().max_text, f"{len(text):,} characters")
    sections: list[CfgSection] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("["):
            m = re.fullmatch(r"\[\s*([A-Za-z_]+)\s*\]", line)
            if not m:
                raise ValueError(f"{source}:{lineno}: malformed section header {line!r}; expected e.g. "
                                 "[convolutional]")
            name = m.group(1).lower()
            if name not in _SECTION_ALIASES:
                raise ValueError(f"{source}:{lineno}: unknown section [{m.group(1)}]; supported sections: "
                                 f"{_SUPPORTED}")
            kind = _SECTION_ALIASES[name]
            if not sections and kind != "net":
                raise ValueError(f"{source}:{lineno}: the first section must be [net], found [{m.group(1)}]")
            if sections and kind == "net":
                raise ValueError(f"{source}:{lineno}: a second [net] section (the first is at line "
                                 f"{sections[0].line})")
            sections.append(CfgSection(kind, lineno))
            continue
        if "=" not in line:
            raise ValueError(f"{source}:{lineno}: expected 'key=value' or a [section] header, found {line!r}")
        if not sections:
            raise ValueError(f"{source}:{lineno}: option {line!r} appears before the first section ([net])")
        key, value = (s.strip() for s in line.split("=", 1))
        key = key.lower()
        sec = sections[-1]
        if key in sec.options:
            raise ValueError(f"{source}:{lineno}: [{sec.kind}] field '{key}' given twice (also at line "
                             f"{sec.options[key][1]})")
        sec.options[key] = (value, lineno)
    if not sections:
        raise ValueError(f"{source}: no sections found; a darknet cfg starts with [net]")
    if len(sections) == 1:
        raise ValueError(f"{source}: only a [net] section; no layers to build")
    for sec in sections:
        for key, neutral in _UNSUPPORTED_OPTIONS[sec.kind].items():
            value = sec.raw(key)
            if value is not None and (neutral is None or value.lower() != neutral):
                raise ValueError(f"{sec.where(source, key)}: [{sec.kind}] field '{key}={value}' is not supported "
                                 "by yolo_prune's darknet builder")
    return sections


# ----------------------------------------------------------------------------------------------------------------
# layers


def _activation(name: str) -> nn.Module:
    if name == "leaky":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if name == "mish":
        return nn.Mish()
    if name == "logistic":
        return nn.Sigmoid()
    if name == "relu":
        return nn.ReLU()
    if name == "swish":
        return nn.SiLU()
    return nn.Identity()


class ConvLayer(nn.Module):
    """``[convolutional]``: ``.conv`` (nn.Conv2d), ``.bn`` (nn.BatchNorm2d or None), ``.act``."""

    def __init__(self, cin: int, cout: int, size: int, stride: int, padding: int, groups: int,
                 batch_normalize: bool, activation: str):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, size, stride, padding, groups=groups, bias=not batch_normalize)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM) if batch_normalize else None
        self.activation = activation
        self.act = _activation(activation)

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


class RouteLayer(nn.Module):
    """``[route]``: concatenation of earlier outputs (absolute ``sources``), optionally one channel group each."""

    def __init__(self, sources: list[int], groups: int = 1, group_id: int = 0):
        super().__init__()
        self.sources = list(sources)
        self.groups = groups
        self.group_id = group_id

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.groups > 1:
            inputs = [torch.chunk(t, self.groups, 1)[self.group_id] for t in inputs]
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1)

    def extra_repr(self) -> str:
        return f"sources={self.sources}, groups={self.groups}, group_id={self.group_id}"


class ShortcutLayer(nn.Module):
    """``[shortcut]``: ``act(previous + output of layer `source`)``."""

    def __init__(self, source: int, activation: str):
        super().__init__()
        self.source = source
        self.activation = activation
        self.act = _activation(activation)

    def forward(self, x, other):
        return self.act(x + other)

    def extra_repr(self) -> str:
        return f"source={self.source}, activation={self.activation}"


class MaxPoolLayer(nn.Module):
    """``[maxpool]`` with darknet's padding: ``padding // 2`` before, the rest after (-inf, i.e. ignored)."""

    def __init__(self, size: int, stride: int, padding: int):
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding

    def forward(self, x):
        if self.padding:
            lo = self.padding // 2
            hi = self.padding - lo
            x = F.pad(x, (lo, hi, lo, hi), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)

    def extra_repr(self) -> str:
        return f"size={self.size}, stride={self.stride}, padding={self.padding}"


class UpsampleLayer(nn.Module):
    """``[upsample]``: nearest-neighbour by an integer ``stride``."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return F.interpolate(x, scale_factor=float(self.stride), mode="nearest")

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class YoloLayer(nn.Module):
    """``[yolo]``: reshapes its input to (B, na, H, W, 5 + nc) raw logits; decoding is the Detector's job."""

    def __init__(self, mask: list[int], anchors: list[tuple[float, float]], classes: int, scale_x_y: float,
                 stride: int):
        super().__init__()
        self.mask = list(mask)
        self.all_anchors = [tuple(a) for a in anchors]
        self.classes = classes
        self.scale_x_y = scale_x_y
        self.stride = stride

    @property
    def na(self) -> int:
        return len(self.mask)

    @property
    def anchors(self) -> list[tuple[float, float]]:
        return [self.all_anchors[m] for m in self.mask]

    def forward(self, x):
        b, _, h, w = x.shape
        return x.view(b, self.na, self.classes + 5, h, w).permute(0, 1, 3, 4, 2).contiguous()

    def extra_repr(self) -> str:
        return f"mask={self.mask}, classes={self.classes}, scale_x_y={self.scale_x_y}, stride={self.stride}"


class DarknetNet(nn.Module):
    """The network of a parsed cfg: ``layers[i]`` is cfg layer ``i`` (the [net] section is not a layer).

    ``forward`` returns one (B, na, H, W, 5 + nc) raw tensor per [yolo] layer.
    """

    def __init__(self, sections: list[CfgSection], source: str = "<cfg>"):
        super().__init__()
        net = sections[0]
        self.lim = lim = limits()
        if len(sections) - 1 > lim.max_layers:
            raise _over(source, "sections", "max_layers", lim.max_layers, f"{len(sections) - 1} layers")
        self.width = check_int(net.get_int("width", 416, source), source, "[net] width", 1, 1 << 15)
        self.height = check_int(net.get_int("height", 416, source), source, "[net] height", 1, 1 << 15)
        self.channels = check_int(net.get_int("channels", 3, source), source, "[net] channels", 1, lim.max_channels,
                                  "max_channels")
        self.params = 0
        self.layers = nn.ModuleList()
        self.kinds: list[str] = []
        channels: list[int] = []
        strides: list[Fraction] = []  # input pixels per output cell
        for i, sec in enumerate(sections[1:]):
            cin = channels[-1] if channels else self.channels
            sin = strides[-1] if strides else Fraction(1)
            layer, cout, sout = self._make_layer(i, sec, cin, sin, channels, strides, source)
            self.layers.append(layer)
            self.kinds.append(sec.kind)
            channels.append(cout)
            strides.append(sout)
        self.out_channels = channels
        self.yolo_indices = [i for i, k in enumerate(self.kinds) if k == "yolo"]
        if not self.yolo_indices:
            raise ValueError(f"{source}: no [yolo] layer; a detector cfg needs at least one")
        # outputs that later routes/shortcuts read; everything else is dropped as soon as it is used
        keep = set()
        for layer in self.layers:
            if isinstance(layer, RouteLayer):
                keep.update(layer.sources)
            elif isinstance(layer, ShortcutLayer):
                keep.add(layer.source)
        self.keep = keep

    @staticmethod
    def _resolve(index: int, i: int, sec: CfgSection, key: str, source: str) -> int:
        j = i + index if index < 0 else index
        if not 0 <= j < i:
            raise ValueError(f"{sec.where(source, key)}: [{sec.kind}] layer {index} resolves to layer {j}, but "
                             f"layer {i} can only read layers 0..{i - 1}")
        return j

    def _make_layer(self, i, sec: CfgSection, cin, sin, channels, strides, source):
        """(layer, output channels, output stride) of one section; one method per section kind."""
        make = getattr(self, f"_make_{sec.kind}") if sec.kind in _SECTION_KINDS else None
        if make is None:
            raise AssertionError(f"unhandled section kind {sec.kind}")  # parse_cfg only yields the kinds below
        return make(i, sec, cin, sin, channels, strides, source)

    def _make_convolutional(self, i, sec: CfgSection, cin, sin, channels, strides, source):
        filters = sec.get_int("filters", None, source)
        size = sec.get_int("size", 1, source)
        stride = sec.get_int("stride", 1, source)
        pad = sec.get_int("pad", 0, source)
        padding = size // 2 if pad else sec.get_int("padding", 0, source)
        groups = sec.get_int("groups", 1, source)
        bn = bool(sec.get_int("batch_normalize", 0, source))
        act = (sec.raw("activation") or "logistic").lower()
        if act not in _ACTIVATIONS:
            raise ValueError(f"{sec.where(source, 'activation')}: [convolutional] field 'activation': expected "
                             f"one of {', '.join(_ACTIVATIONS)}, found {act!r}")
        if filters < 1 or size < 1 or stride < 1 or groups < 1:
            raise ValueError(f"{sec.where(source)}: [convolutional] filters, size, stride and groups must be "
                             f">= 1, found {filters}, {size}, {stride}, {groups}")
        lim, where = self.lim, sec.where(source)
        check_int(filters, where, "[convolutional] filters", 1, lim.max_channels, "max_channels")
        check_int(size, where, "[convolutional] size", 1, lim.max_kernel, "max_kernel")
        check_int(stride, where, "[convolutional] stride", 1, lim.max_stride, "max_stride")
        check_int(groups, where, "[convolutional] groups", 1, lim.max_channels, "max_channels")
        check_int(padding, where, "[convolutional] padding", 0, lim.max_kernel, "max_kernel")
        if cin % groups or filters % groups:
            raise ValueError(f"{sec.where(source, 'groups')}: [convolutional] groups={groups} must divide the "
                             f"input channels ({cin}) and filters ({filters})")
        self.params += filters * (cin // groups) * size * size + 4 * filters
        if self.params > lim.max_params:
            raise _over(where, "parameters", "max_params", lim.max_params, f"{self.params:,} parameters")
        return ConvLayer(cin, filters, size, stride, padding, groups, bn, act), filters, sin * stride

    def _make_route(self, i, sec: CfgSection, cin, sin, channels, strides, source):
        idx = sec.get_list("layers", source, required=True)
        if not idx:
            raise ValueError(f"{sec.where(source, 'layers')}: [route] field 'layers' is empty")
        sources = [self._resolve(k, i, sec, "layers", source) for k in idx]
        groups = sec.get_int("groups", 1, source)
        group_id = sec.get_int("group_id", 0, source)
        if groups < 1 or not 0 <= group_id < groups:
            raise ValueError(f"{sec.where(source, 'group_id')}: [route] expected 0 <= group_id < groups, found "
                             f"groups={groups} group_id={group_id}")
        for j in sources:
            if channels[j] % groups:
                raise ValueError(f"{sec.where(source, 'groups')}: [route] groups={groups} does not divide the "
                                 f"{channels[j]} channels of layer {j}")
            if strides[j] != strides[sources[0]]:
                raise ValueError(f"{sec.where(source, 'layers')}: [route] layers {sources[0]} and {j} have "
                                 f"different spatial sizes (strides {strides[sources[0]]} and {strides[j]})")
        cout = sum(channels[j] // groups for j in sources)
        check_int(cout, sec.where(source), "[route] output channels", 1, self.lim.max_channels, "max_channels")
        return RouteLayer(sources, groups, group_id), cout, strides[sources[0]]

    def _make_shortcut(self, i, sec: CfgSection, cin, sin, channels, strides, source):
        idx = sec.get_list("from", source, required=True)
        if len(idx) != 1:
            raise ValueError(f"{sec.where(source, 'from')}: [shortcut] field 'from': expected one layer, "
                             f"found {idx}")
        j = self._resolve(idx[0], i, sec, "from", source)
        if channels[j] != cin or strides[j] != sin:
            raise ValueError(f"{sec.where(source, 'from')}: [shortcut] layer {j} has {channels[j]} channels at "
                             f"stride {strides[j]}, the previous layer {cin} at stride {sin}; they must match")
        act = (sec.raw("activation") or "linear").lower()
        if act not in _ACTIVATIONS:
            raise ValueError(f"{sec.where(source, 'activation')}: [shortcut] field 'activation': expected one "
                             f"of {', '.join(_ACTIVATIONS)}, found {act!r}")
        return ShortcutLayer(j, act), cin, sin

    def _make_maxpool(self, i, sec: CfgSection, cin, sin, channels, strides, source):
        size = sec.get_int("size", 1, source)
        stride = sec.get_int("stride", 1, source)
        padding = sec.get_int("padding", size - 1, source)
        if size < 1 or stride < 1 or padding < 0:
            raise ValueError(f"{sec.where(source)}: [maxpool] expected size >= 1, stride >= 1, padding >= 0, "
                             f"found {size}, {stride}, {padding}")
        check_int(size, sec.where(source), "[maxpool] size", 1, self.lim.max_kernel, "max_kernel")
        check_int(stride, sec.where(source), "[maxpool] stride", 1, self.lim.max_stride, "max_stride")
        check_int(padding, sec.where(source), "[maxpool] padding", 0, self.lim.max_kernel, "max_kernel")
        return MaxPoolLayer(size, stride, padding), cin, sin * stride

    def _make_upsample(self, i, sec: CfgSection, cin, sin, channels, strides, source):
        stride = sec.get_int("stride", 2, source)
        if stride < 1:
            raise ValueError(f"{sec.where(source, 'stride')}: [upsample] field 'stride': expected >= 1 "
                             f"(downsampling upsample layers are not supported), found {stride}")
        check_int(stride, sec.where(source), "[upsample] stride", 1, self.lim.max_stride, "max_stride")
        if sin / stride < Fraction(1, 4):  # finer than 4x the input resolution: activations explode
            raise ValueError(f"{sec.where(source, 'stride')}: [upsample] would reach {stride / sin}x the input "
                             "resolution; expected at most 4x")
        return UpsampleLayer(stride), cin, sin / stride

    def _make_yolo(self, i, sec: CfgSection, cin, sin, channels, strides, source):
        classes = sec.get_int("classes", 20, source)
        check_int(classes, sec.where(source), "[yolo] classes", 1, self.lim.max_classes, "max_classes")
        anchors = sec.get_list("anchors", source, kind=float, required=True)
        if not all(math.isfinite(a) and 0 < a <= 1e5 for a in anchors) or len(anchors) > 128:
            raise ValueError(f"{sec.where(source, 'anchors')}: [yolo] field 'anchors': expected at most 64 "
                             f"pairs of finite positive numbers, found {anchors[:8]}")
        if len(anchors) % 2:
            raise ValueError(f"{sec.where(source, 'anchors')}: [yolo] field 'anchors': expected w,h pairs, "
                             f"found {len(anchors)} numbers")
        pairs = [(anchors[k], anchors[k + 1]) for k in range(0, len(anchors), 2)]
        num = sec.get_int("num", len(pairs), source)
        if num != len(pairs):
            raise ValueError(f"{sec.where(source, 'num')}: [yolo] field 'num={num}' but 'anchors' holds "
                             f"{len(pairs)} pairs")
        mask = sec.get_list("mask", source) or list(range(num))
        if any(not 0 <= m < num for m in mask):
            raise ValueError(f"{sec.where(source, 'mask')}: [yolo] field 'mask': expected indices in 0..{num - 1}"
                             f", found {mask}")
        need = len(mask) * (classes + 5)
        if cin != need:
            raise ValueError(f"{sec.where(source)}: [yolo] with classes={classes} and {len(mask)} masked "
                             f"anchors needs {need} input channels (filters={need} in the layer before it), "
                             f"found {cin}")
        if sin.denominator != 1:
            raise ValueError(f"{sec.where(source)}: [yolo] layer {i} sits at a fractional stride {sin}")
        scale = sec.get_float("scale_x_y", 1.0, source)
        if not (math.isfinite(scale) and 0 < scale <= 10):
            raise ValueError(f"{sec.where(source, 'scale_x_y')}: [yolo] field 'scale_x_y': expected a number in "
                             f"(0, 10], found {scale}")
        return YoloLayer(mask, pairs, classes, scale, int(sin)), cin, sin

    @property
    def yolo_layers(self) -> list[YoloLayer]:
        return [self.layers[i] for i in self.yolo_indices]

    def forward(self, x):
        outputs: list[torch.Tensor | None] = []
        heads = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, RouteLayer):
                x = layer([outputs[j] for j in layer.sources])
            elif isinstance(layer, ShortcutLayer):
                x = layer(x, outputs[layer.source])
            elif isinstance(layer, YoloLayer):
                heads.append(layer(x))  # darknet passes the yolo input through as the layer's output
            else:
                x = layer(x)
            outputs.append(x if i in self.keep else None)
        return heads


# ----------------------------------------------------------------------------------------------------------------
# the Detector


class DarknetDetector(Detector):
    """A darknet cfg network behind the common Detector interface."""

    family = "darknet"
    head_type = "darknet"

    def __init__(self, model: DarknetNet, names: dict, spec: dict, source: str = "<cfg>"):
        yolos = model.yolo_layers
        if len({y.na for y in yolos}) != 1:
            raise ValueError(f"{source}: every [yolo] layer must use the same number of anchors "
                             f"(masks {[y.mask for y in yolos]})")
        anchors = torch.tensor([y.anchors for y in yolos], dtype=torch.float32)
        super().__init__(model, names, [y.stride for y in yolos], anchors=anchors, spec=spec)
        self.scale_x_y = [float(y.scale_x_y) for y in yolos]
        self.input_size = (model.height, model.width)

    def head_modules(self) -> list[str]:
        """The nn.Conv2d feeding each [yolo] layer: its outputs are boxes/classes and can never be pruned."""
        names = []
        for i in self.model.yolo_indices:
            if i == 0 or not isinstance(self.model.layers[i - 1], ConvLayer):
                raise ValueError(f"darknet layer {i} ([yolo]) is not preceded by a [convolutional] layer")
            names.append(f"model.layers.{i - 1}.conv")
        return names

    def decode(self, raw) -> torch.Tensor:
        out = []
        for i, p in enumerate(raw):
            b, na, h, w, no = p.shape
            s = self.scale_x_y[i]
            gy, gx = torch.meshgrid(torch.arange(h, device=p.device, dtype=p.dtype),
                                    torch.arange(w, device=p.device, dtype=p.dtype), indexing="ij")
            grid = torch.stack((gx, gy), -1).view(1, 1, h, w, 2)
            anchor = self.anchors[i].to(device=p.device, dtype=p.dtype).view(1, na, 1, 1, 2)
            xy = (p[..., :2].sigmoid() * s - 0.5 * (s - 1) + grid) * self.strides[i]
            wh = p[..., 2:4].exp() * anchor
            scores = p[..., 4:5].sigmoid() * p[..., 5:].sigmoid()
            out.append(torch.cat((xy, wh, scores), -1).view(b, na * h * w, no - 1))
        return torch.cat(out, 1)


# ----------------------------------------------------------------------------------------------------------------
# building and loading


def _names_dict(names, nc: int, source: str) -> dict:
    if names is None:
        return {i: f"class{i}" for i in range(nc)}
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else {int(k): str(v) for k, v in
                                                                               dict(names).items()}
    if sorted(names) != list(range(nc)):
        raise ValueError(f"{source}: 'names' must give one name for each class 0..{nc - 1}, found {len(names)} "
                         f"names (keys {sorted(names)[:5]}...)")
    return {int(k): str(v) for k, v in names.items()}


def _override_classes(sections: list[CfgSection], nc: int, source: str) -> None:
    """Set ``classes`` of every [yolo] and ``filters`` of the conv feeding it to ``(nc + 5) * len(mask)``."""
    for i, sec in enumerate(sections):
        if sec.kind != "yolo":
            continue
        prev = sections[i - 1]
        if prev.kind != "convolutional":
            raise ValueError(f"{sec.where(source)}: [yolo] must follow a [convolutional] layer to change the number "
                             f"of classes, found [{prev.kind}]")
        mask = sec.get_list("mask", source)
        if mask is None:
            anchors = sec.get_list("anchors", source, kind=float, required=True)
            mask = list(range(sec.get_int("num", len(anchors) // 2, source)))
        sec.options["classes"] = (str(nc), sec.options.get("classes", (None, sec.line))[1])
        prev.options["filters"] = (str((nc + 5) * len(mask)), prev.options.get("filters", (None, prev.line))[1])


def _cfg_classes(sections: list[CfgSection], source: str) -> int:
    found = {sec.get_int("classes", 20, source) for sec in sections if sec.kind == "yolo"}
    if len(found) != 1:
        raise ValueError(f"{source}: the [yolo] layers disagree on 'classes' ({sorted(found)}); pass nc= to set "
                         "one value for all")
    return found.pop()


def build_darknet(base: str, nc: int | None = None, names=None, source: str = "") -> DarknetDetector:
    """Build a DarknetDetector (random weights) from cfg text.

    ``nc`` overrides ``classes`` of every [yolo] layer and the filters of the conv before it; without ``nc`` the
    number of names (if given) or the cfg's classes is used. ``names`` default to "class0", "class1", ...
    """
    source = source or "<cfg>"
    sections = parse_cfg(base, source)
    if nc is None and names is not None:
        nc = len(names)
    if nc is not None:
        if int(nc) < 1:
            raise ValueError(f"{source}: nc must be >= 1, found {nc}")
        _override_classes(sections, int(nc), source)
    nc = _cfg_classes(sections, source)
    model = DarknetNet(sections, source)
    spec = {"family": "darknet", "base": base, "nc": nc, "names": _names_dict(names, nc, source)}
    return DarknetDetector(model, spec["names"], spec, source)


def _read_cfg(cfg_path) -> tuple[Path, str]:
    p = Path(cfg_path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: darknet cfg not found. Supply the network's .cfg file at this path (e.g. "
                                "cfg/yolov4-tiny.cfg in this project); a .weights file needs its .cfg of the same "
                                "name beside it, or pass the .cfg and weights= explicitly")
    size = p.stat().st_size
    if size > limits().max_text:
        raise _over(str(p), "file size", "max_text", limits().max_text, f"{size:,} bytes")
    return p, p.read_text(encoding="utf-8", errors="replace")


def load_darknet(cfg_path, weights=None, nc: int | None = None) -> DarknetDetector:
    """Build from a .cfg file, then read a .weights file if given.

    With ``nc`` different from the cfg's classes the weights are read into the cfg's own architecture first
    (so their size is checked), then everything except the [yolo] head convs is copied into the ``nc`` model.
    """
    p, text = _read_cfg(cfg_path)
    det = build_darknet(text, source=str(p))
    if weights is not None:
        read_weights(det, weights)
    if nc is None or int(nc) == det.nc:
        return det
    new = build_darknet(text, nc=int(nc), source=str(p))
    if weights is not None:
        head = tuple(n[len("model."):].rsplit(".", 1)[0] + "." for n in new.head_modules())
        state = {k: v for k, v in det.model.state_dict().items() if not k.startswith(head)}
        missing, unexpected = new.model.load_state_dict(state, strict=False)
        if unexpected or not all(k.startswith(head) for k in missing):
            raise RuntimeError(f"{p}: copying weights into the nc={nc} model left missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]} outside the [yolo] head convs")
    return new


# ----------------------------------------------------------------------------------------------------------------
# .weights


def _conv_tensors(detector: DarknetDetector) -> list[tuple[int, list[torch.Tensor]]]:
    """(layer index, tensors in darknet order) for every conv, in file order."""
    out = []
    for i, layer in enumerate(detector.model.layers):
        if isinstance(layer, ConvLayer):
            if layer.bn is not None:
                bn = layer.bn
                tensors = [bn.bias, bn.weight, bn.running_mean, bn.running_var, layer.conv.weight]
            else:
                tensors = [layer.conv.bias, layer.conv.weight]
            out.append((i, tensors))
    return out


def weights_float_count(detector: DarknetDetector) -> int:
    """How many float32 values a .weights file for this model holds after its header."""
    return sum(t.numel() for _, ts in _conv_tensors(detector) for t in ts)


def read_weights(detector: DarknetDetector, path) -> dict:
    """Load a darknet .weights file into ``detector`` in place. Returns the header {major, minor, revision, seen}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: darknet .weights file not found. Supply the .weights trained for this cfg "
                                "at this path (e.g. weights/yolov4-tiny.weights)")
    data = path.read_bytes()
    if len(data) < 16:
        raise ValueError(f"{path}: {len(data)} bytes is too short for a darknet .weights header (16 or 20 bytes)")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    wide_seen = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    header = 20 if wide_seen else 16
    seen = int(np.frombuffer(data, "<i8" if wide_seen else "<i4", 1, 12)[0]) if len(data) >= header else 0
    expected = weights_float_count(detector)
    body = len(data) - header
    if body != expected * 4:
        extra = f" + {body % 4} bytes" if body % 4 else ""
        raise ValueError(f"{path}: expected {expected:,} floats ({header + 4 * expected:,} bytes with the "
                         f"{header}-byte header of version {major}.{minor}) for this cfg, found "
                         f"{max(body, 0) // 4:,} floats{extra} ({len(data):,} bytes). The file is truncated or "
                         "belongs to a different cfg (classes, filters)")
    floats = np.frombuffer(data, "<f4", expected, header)
    bad = int((~np.isfinite(floats)).sum())
    if bad:
        first = int(np.flatnonzero(~np.isfinite(floats))[0])
        raise ValueError(f"{path}: {bad:,} of its {expected:,} weights are NaN or infinite (first at float {first}); "
                         "expected finite weights")
    pos = 0
    with torch.no_grad():
        for _, tensors in _conv_tensors(detector):
            for t in tensors:
                n = t.numel()
                t.copy_(torch.from_numpy(floats[pos:pos + n].copy()).view_as(t))
                pos += n
    return {"major": major, "minor": minor, "revision": revision, "seen": seen}


def write_weights(detector: DarknetDetector, path, seen: int = 0) -> Path:
    """Write a darknet .weights file (version 0.2.0, int64 ``seen``) atomically."""
    header = np.array([0, 2, 0], "<i4").tobytes() + np.array([seen], "<i8").tobytes()

    def chunks():
        yield header
        for _, tensors in _conv_tensors(detector):
            for t in tensors:
                yield t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes()

    return atomic_write_chunks(Path(path), chunks())


# ----------------------------------------------------------------------------------------------------------------
# cfg writer for the current (possibly pruned) widths


def cfg_text_for(detector: DarknetDetector) -> str:
    """The base cfg text with ``filters``/``groups`` of every conv and ``classes`` of every [yolo] set to the
    detector's current values. Comments and all other lines are kept. Raises if the text would not rebuild the
    detector's exact layer shapes (e.g. a route group split unevenly by pruning)."""
    from .spec import record_layers

    base = detector.spec.get("base")
    if not isinstance(base, str):
        raise ValueError("detector.spec['base'] must hold the darknet cfg text to write a cfg")
    source = "detector.spec['base']"
    sections = parse_cfg(base, source)
    layers = detector.model.layers
    if len(sections) - 1 != len(layers):
        raise ValueError(f"{source}: {len(sections) - 1} layers in the cfg text, {len(layers)} in the model")
    lines = base.splitlines()
    replace: dict[int, str] = {}  # 1-based line -> new text
    insert: dict[int, list[str]] = {}  # 1-based line -> lines to add after it

    def set_option(sec: CfgSection, key: str, value):
        if key in sec.options:
            ln = sec.options[key][1]
            old = lines[ln - 1]
            comment = old[old.index("#"):] if "#" in old else ""
            indent = old[:len(old) - len(old.lstrip())]
            replace[ln] = f"{indent}{key}={value}" + (f"  {comment}" if comment else "")
        else:
            insert.setdefault(sec.line, []).append(f"{key}={value}")

    for sec, layer in zip(sections[1:], layers):
        if sec.kind == "convolutional":
            if not isinstance(layer, ConvLayer):
                raise ValueError(f"{sec.where(source)}: cfg has [convolutional], model has {type(layer).__name__}")
            set_option(sec, "filters", layer.conv.out_channels)
            if layer.conv.groups != 1 or "groups" in sec.options:
                set_option(sec, "groups", layer.conv.groups)
        elif sec.kind == "yolo":
            set_option(sec, "classes", layer.classes)
    out = []
    for ln, line in enumerate(lines, 1):
        out.append(replace.get(ln, line))
        out.extend(insert.get(ln, []))
    text = "\n".join(out) + "\n"

    with torch.device("meta"):
        rebuilt = build_darknet(text, source="written cfg")
    want, got = record_layers(detector.model), record_layers(rebuilt.model)
    wrong = [name for name in list(want) + [n for n in got if n not in want] if want.get(name) != got.get(name)]
    if wrong:
        name = wrong[0]
        raise ValueError(f"the written cfg does not reproduce layer 'model.{name}' ({len(wrong)} layer(s) differ): "
                         f"the model has {want.get(name)}, the cfg builds {got.get(name)}. Channels across a route "
                         "with groups must stay divisible (equal halves) and every conv's input width must match "
                         "what feeds it")
    return text


def write_cfg(detector: DarknetDetector, path) -> Path:
    """Write a .cfg whose filters reflect the current conv widths; with write_weights it reloads identically."""
    text = cfg_text_for(detector)
    return atomic_write_chunks(Path(path), [text.encode("utf-8")])


# ----------------------------------------------------------------------------------------------------------------
# the family


def _class_convs(det) -> list[ClassConv]:
    """The conv feeding each [yolo] layer: na x (5 box/objectness rows + nc class rows)."""
    yolos = det.model.yolo_layers
    return [ClassConv(name, y.na, 5, float(y.stride)) for name, y in zip(det.head_modules(), yolos)]


def _class_bias(bias: torch.Tensor, nc: int, stride: float) -> None:
    # darknet's own C trainer leaves new biases at 0; we train darknet heads with the yolov5 loss, so its prior
    yolov5_class_bias(bias, nc, stride)


def _set_nc(det, nc: int) -> None:
    for y in det.model.yolo_layers:
        y.classes = nc


def _sniff(path: Path, pickle_globals: frozenset | None) -> bool:
    return pickle_globals is None and path.suffix.lower() in (".cfg", ".weights")


def _load(path, nc: int | None = None, weights=None) -> DarknetDetector:
    """A .cfg (+ ``weights``), or a .weights with the .cfg of the same stem beside it."""
    path = Path(path)
    is_cfg = path.suffix.lower() == ".cfg"
    w = weights if weights is not None else (None if is_cfg else path)
    return load_darknet(path if is_cfg else path.with_suffix(".cfg"), weights=w, nc=nc)


def _write_native(detector, out) -> list[Path]:
    out = Path(out)
    cfg = write_cfg(detector, out.with_suffix(".cfg"))
    try:
        return [cfg, write_weights(detector, out.with_suffix(".weights"))]
    except BaseException:
        cfg.unlink(missing_ok=True)
        raise


FAMILY = registry.register(registry.Family(
    name="darknet", sniff=_sniff, load=_load, build=build_darknet, loss="anchor",
    write_native=_write_native, native_kind="darknet cfg",
    head=registry.ClassHead(_class_convs, _class_bias, _set_nc)))
