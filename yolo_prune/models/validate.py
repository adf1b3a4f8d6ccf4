"""One loading policy for every model description: validate the whole structure, bound every size, then build.

Every way an architecture enters (a model ``.yaml``, our checkpoint's ``spec.base``, the yaml inside an
ultralytics or legacy yolov5 ``.pt``, a darknet ``.cfg``) goes through this module before any module is built:

1. ``walk_plain``: the structure is plain data only (dict/list/str/int/float/bool/None), walked iteratively with a
   node budget that counts every visit, so yaml anchors or shared pickled lists cannot explode (an alias bomb
   stops at the budget instead of running for ever).
2. ``check_yaml_architecture``: every layer row names a module from an explicit allow-list of layer classes (no
   model classes, no ``TorchVision``, nothing that loads or downloads), its arguments are bounded literals, and the
   activation comes from a fixed list. Strings that ultralytics would look up or ``eval`` are refused.
3. ``dry_run``: the layers are built once on the ``meta`` device (no memory) under ``AllocationGuard``; every conv,
   pool and upsample is then checked against ``Limits`` and the parameters are counted, all before the real build.

Limits are generous defaults, each raised with an environment variable (``YOLO_PRUNE_MAX_PARAMS`` ...), see
``Limits.from_env`` and docs/SECURITY.md.
"""
from __future__ import annotations

import ast
import contextlib
import math
import os
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["ModelSpecError", "Limits", "limits", "walk_plain", "check_yaml_architecture", "check_activation",
           "check_int", "AllocationGuard", "dry_run", "check_modules", "ULTRALYTICS_LAYERS", "ACTIVATIONS"]


class ModelSpecError(ValueError):
    """A model description (yaml, spec, cfg) was refused before anything was built."""


@dataclass(frozen=True)
class Limits:
    """Bounds on every size a file can choose. Raise one with its environment variable (see ``from_env``)."""

    max_params: int = 2 ** 31      # total parameters of the built model
    max_channels: int = 16384      # input/output channels of any layer (yolov8x tops out at 640)
    max_kernel: int = 64           # conv / pool kernel side
    max_stride: int = 64           # conv / pool stride, upsample factor, dilation
    max_layers: int = 1024         # rows of a yaml, sections of a cfg
    max_repeats: int = 64          # a yaml row's repeat count n (after depth_multiple)
    max_classes: int = 100_000     # nc
    max_nodes: int = 200_000       # items visited while walking a structure (alias bombs stop here)
    max_text: int = 4_000_000      # characters of one string (a darknet cfg text inside a spec)
    max_activation: int = 2 ** 28  # elements of any layer output for a 256x256 input (upsampling chains)

    @classmethod
    def from_env(cls) -> "Limits":
        """Defaults, overridden by YOLO_PRUNE_MAX_PARAMS, YOLO_PRUNE_MAX_CHANNELS, ... (one per field)."""
        values = {}
        for f in fields(cls):
            env = f"YOLO_PRUNE_{f.name.upper()}"
            raw = os.environ.get(env)
            if raw is None:
                continue
            try:
                value = int(float(raw))
            except ValueError:
                raise ModelSpecError(f"environment {env}: expected an integer, found {raw!r}") from None
            if value < 1:
                raise ModelSpecError(f"environment {env}: expected >= 1, found {value}")
            values[f.name] = value
        return cls(**values)


def limits() -> Limits:
    return Limits.from_env()


def _over(source: str, field: str, what: str, limit: int, value) -> ModelSpecError:
    env = f"YOLO_PRUNE_{what.upper()}"
    return ModelSpecError(f"{source}: field '{field}': {value} exceeds the limit {what}={limit:,} "
                          f"(raise it with {env}=N if the model is genuine)")


def check_int(value, source: str, field: str, lo: int, hi: int, limit_name: str | None = None) -> int:
    """An integer (not bool, not float) in lo..hi; the error names the file, the field and the bound."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelSpecError(f"{source}: field '{field}': expected an integer in {lo}..{hi}, found {value!r}")
    if value > hi and limit_name:
        raise _over(source, field, limit_name, hi, value)
    if not lo <= value <= hi:
        raise ModelSpecError(f"{source}: field '{field}': expected an integer in {lo}..{hi}, found {value}")
    return value


# --------------------------------------------------------------------------------------------- plain data
_SCALARS = (str, int, float, bool, type(None))


def walk_plain(obj, source: str, field: str = "spec", lim: Limits | None = None, allow_tuples: bool = True) -> int:
    """Check that ``obj`` is plain data within the node budget; returns the number of nodes visited.

    Every visit counts (shared sub-lists are counted each time they are reached), so a structure that would
    expand to 2^45 nodes is refused after ``max_nodes`` steps. Floats must be finite, strings bounded.
    """
    lim = lim or limits()
    stack = [(obj, field, 0)]
    visited = 0
    while stack:
        node, where, depth = stack.pop()
        visited += 1
        if visited > lim.max_nodes:
            raise _over(source, field, "max_nodes", lim.max_nodes, "more nodes than that (shared or repeated "
                        "sub-structures such as yaml aliases count each time they are reached)")
        if depth > 64:
            raise ModelSpecError(f"{source}: field '{where}': nested deeper than 64 levels")
        if isinstance(node, str):
            if len(node) > lim.max_text:
                raise _over(source, where, "max_text", lim.max_text, f"a string of {len(node):,} characters")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise ModelSpecError(f"{source}: field '{where}': expected a finite number, found {node}")
        elif isinstance(node, _SCALARS):
            pass
        elif isinstance(node, dict):
            if len(node) > lim.max_nodes:
                raise _over(source, where, "max_nodes", lim.max_nodes, f"a mapping of {len(node):,} keys")
            for k, v in node.items():
                if not isinstance(k, (str, int)):
                    raise ModelSpecError(f"{source}: field '{where}': keys must be strings or integers, found "
                                         f"{type(k).__name__}")
                stack.append((v, f"{where}.{k}", depth + 1))
        elif isinstance(node, list) or (allow_tuples and isinstance(node, tuple)):
            if len(node) > lim.max_nodes:
                raise _over(source, where, "max_nodes", lim.max_nodes, f"a list of {len(node):,} items")
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node))
        else:
            raise ModelSpecError(f"{source}: field '{where}': expected plain data (mapping, list, string, number), "
                                 f"found a {type(node).__module__}.{type(node).__qualname__} object")
    return visited


# --------------------------------------------------------------------------------------------- yaml rows
# The layer classes a detection yaml may name (ultralytics.nn.tasks globals, or nn.<Name>). Model classes
# (DetectionModel, any BaseModel), TorchVision (downloads weights), text/CLIP and world/prompt heads are absent.
ULTRALYTICS_LAYERS = frozenset({
    "Conv", "Conv2", "ConvTranspose", "GhostConv", "DWConv", "DWConvTranspose2d", "RepConv", "Focus",
    "Bottleneck", "GhostBottleneck", "BottleneckCSP", "C1", "C2", "C2f", "C3", "C3x", "C3TR", "C3Ghost", "C3k2",
    "C2fPSA", "C2PSA", "C2fCIB", "PSA", "A2C2f", "RepC3", "RepNCSPELAN4", "ELAN1", "ADown", "AConv", "SPPELAN",
    "SCDown", "SPP", "SPPF", "HGStem", "HGBlock", "ResNetLayer", "CBLinear", "CBFuse", "Concat",
    "Detect", "v10Detect",
    "nn.Upsample", "nn.MaxPool2d", "nn.AvgPool2d", "nn.BatchNorm2d", "nn.Identity", "nn.ZeroPad2d",
    "nn.ConvTranspose2d", "nn.Conv2d",
})
YOLOV5_LAYERS = frozenset({"Conv", "Bottleneck", "C3", "SPPF", "SPP", "Focus", "Concat", "Detect", "nn.Upsample",
                           "nn.MaxPool2d", "nn.BatchNorm2d", "nn.Identity", "nn.ZeroPad2d"})
# strings a row's args may hold: names parse_model substitutes and upsample modes; nothing else is looked up
_ARG_STRINGS = frozenset({"nc", "anchors", "None", "True", "False", "nearest", "bilinear", "bicubic"})
ACTIVATIONS = frozenset({"SiLU", "ReLU", "LeakyReLU", "Hardswish", "Mish", "Identity", "ReLU6", "Sigmoid", "GELU",
                         "Tanh", "ELU", "Hardsigmoid", "SELU", "CELU"})


def check_activation(act, source: str) -> None:
    """``nn.<Name>(literal numbers)`` with <Name> from ``ACTIVATIONS`` (``torch.nn.`` prefix allowed)."""
    if act is None or act is False:
        return
    expected = f"nn.<{'|'.join(sorted(ACTIVATIONS))}>(numbers)"
    if not isinstance(act, str) or len(act) > 200:
        raise ModelSpecError(f"{source}: field 'activation': expected {expected}, found {act!r}"[:400])
    try:
        call = ast.parse(act.strip(), mode="eval").body
    except SyntaxError:
        raise ModelSpecError(f"{source}: field 'activation': expected {expected}, found {act!r}") from None
    ok = isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in ACTIVATIONS
    if ok:
        base = call.func.value
        ok = (isinstance(base, ast.Name) and base.id == "nn") or (
            isinstance(base, ast.Attribute) and base.attr == "nn" and isinstance(base.value, ast.Name)
            and base.value.id == "torch")
    values = list(call.args) + [k.value for k in call.keywords] if ok else []
    ok = ok and all(k.arg in ("negative_slope", "inplace", "alpha", "approximate") for k in call.keywords)
    for v in values:
        literal = isinstance(v, ast.Constant) and (
            (isinstance(v.value, (int, float, bool)) and math.isfinite(float(v.value)) and abs(v.value) <= 1e3)
            or v.value in ("none", "tanh"))
        ok = ok and literal
    if not ok:
        raise ModelSpecError(f"{source}: field 'activation': expected {expected}, found {act!r}")


def _check_args(args, source: str, where: str, lim: Limits) -> None:
    if not isinstance(args, list):
        raise ModelSpecError(f"{source}: {where} args: expected a list, found {type(args).__name__}")
    bound = max(lim.max_channels, 1 << 16)
    for j, a in enumerate(args):
        items = a if isinstance(a, list) else [a]
        for b in items:
            inner = b if isinstance(b, list) else [b]  # anchors: a list of lists of numbers
            for c in inner:
                if isinstance(c, str):
                    if c not in _ARG_STRINGS:
                        raise ModelSpecError(f"{source}: {where} args[{j}]: string {c!r} is not allowed; expected "
                                             f"numbers, lists of numbers or one of {sorted(_ARG_STRINGS)}")
                elif isinstance(c, (bool, type(None))):
                    pass
                elif isinstance(c, (int, float)):
                    if not math.isfinite(c) or abs(c) > bound:
                        raise _over(source, f"{where} args[{j}]", "max_channels", bound, c) if math.isfinite(c) \
                            else ModelSpecError(f"{source}: {where} args[{j}]: expected a finite number, found {c}")
                else:
                    raise ModelSpecError(f"{source}: {where} args[{j}]: expected numbers or lists of numbers, found "
                                         f"{type(c).__name__} (nested architectures are not accepted)")


# where the kernel / stride sit in a row's args (before parse_model inserts the input channels)
_KERNEL_STRIDE = {"Conv": (1, 2), "Conv2": (1, 2), "DWConv": (1, 2), "GhostConv": (1, 2), "ConvTranspose": (1, 2),
                  "Focus": (1, 2), "RepConv": (1, 2), "DWConvTranspose2d": (1, 2), "nn.Conv2d": (2, 3),
                  "nn.ConvTranspose2d": (1, 2), "nn.MaxPool2d": (0, 1), "nn.AvgPool2d": (0, 1)}


def _check_row_sizes(name: str, args: list, source: str, where: str, lim: Limits) -> None:
    """Channels, kernel, stride and upsample factor of a row, from its literal args (the dry run re-checks)."""
    def num(j):
        v = args[j] if j < len(args) else None
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    if name not in ("Detect", "v10Detect", "Concat") and not name.startswith("nn.") and num(0) is not None:
        if num(0) > lim.max_channels:
            raise _over(source, f"{where} args[0] (channels)", "max_channels", lim.max_channels, num(0))
    if name in _KERNEL_STRIDE:
        k, st = _KERNEL_STRIDE[name]
        if num(k) is not None and num(k) > lim.max_kernel:
            raise _over(source, f"{where} args[{k}] (kernel)", "max_kernel", lim.max_kernel, num(k))
        if num(st) is not None and num(st) > lim.max_stride:
            raise _over(source, f"{where} args[{st}] (stride)", "max_stride", lim.max_stride, num(st))
    if name == "nn.Upsample" and num(1) is not None and num(1) > lim.max_stride:
        raise _over(source, f"{where} args[1] (scale_factor)", "max_stride", lim.max_stride, num(1))


def _check_from(f, n_rows: int, source: str, where: str) -> None:
    for x in (f if isinstance(f, list) else [f]):
        if isinstance(x, bool) or not isinstance(x, int) or not -n_rows <= x < n_rows:
            raise ModelSpecError(f"{source}: {where} 'from': expected layer indices in -{n_rows}..{n_rows - 1}, "
                                 f"found {f!r}")
    if isinstance(f, list) and not f:
        raise ModelSpecError(f"{source}: {where} 'from': expected at least one layer index, found []")


def _check_multiple(d: dict, key: str, source: str, hi: float = 16.0) -> None:
    v = d.get(key)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v <= hi):
        raise ModelSpecError(f"{source}: field '{key}': expected a number in (0, {hi:g}], found {v!r}")


def check_yaml_architecture(d, source: str, allowed: frozenset = ULTRALYTICS_LAYERS, lim: Limits | None = None,
                            heads=("Detect", "v10Detect")) -> None:
    """Whole-structure check of an ultralytics / yolov5 model yaml dict before anything is built."""
    lim = lim or limits()
    if not isinstance(d, dict):
        raise ModelSpecError(f"{source}: expected a model yaml mapping, found {type(d).__name__}")
    walk_plain(d, source, "yaml", lim)
    for key in ("backbone", "head"):
        if not isinstance(d.get(key), list):
            raise ModelSpecError(f"{source}: model yaml field '{key}' expected a list of layers, found "
                                 f"{type(d.get(key)).__name__}")
    rows = d["backbone"] + d["head"]
    if not rows:
        raise ModelSpecError(f"{source}: model yaml has no layers")
    if len(rows) > lim.max_layers:
        raise _over(source, "backbone+head", "max_layers", lim.max_layers, f"{len(rows)} layers")
    if d.get("nc") is not None:
        check_int(d["nc"], source, "nc", 1, lim.max_classes, "max_classes")
    for key in ("depth_multiple", "width_multiple"):
        _check_multiple(d, key, source)
    depth = d.get("depth_multiple", 1.0) or 1.0
    scales = d.get("scales")
    if scales is not None:
        if not isinstance(scales, dict) or not scales:
            raise ModelSpecError(f"{source}: field 'scales' expected a mapping scale -> [depth, width, max_channels]")
        for k, v in scales.items():
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                  for x in v)):
                raise ModelSpecError(f"{source}: field 'scales.{k}': expected [depth, width, max_channels], "
                                     f"found {v!r}")
            if not (0 < v[0] <= 16 and 0 < v[1] <= 16 and 0 < v[2] <= lim.max_channels):
                raise ModelSpecError(f"{source}: field 'scales.{k}': expected depth and width in (0, 16] and "
                                     f"max_channels in 1..{lim.max_channels}, found {v}")
        scale = d.get("scale")
        if scale and scale not in scales:
            raise ModelSpecError(f"{source}: field 'scale' expected one of {sorted(scales)}, found {scale!r}")
        depth = max(float(v[0]) for v in scales.values())
    if d.get("channels") is not None:
        check_int(d["channels"], source, "channels", 1, lim.max_channels, "max_channels")
    if d.get("ch") is not None:
        check_int(d["ch"], source, "ch", 1, lim.max_channels, "max_channels")
    if d.get("reg_max") is not None:
        check_int(d["reg_max"], source, "reg_max", 1, 64)
    check_activation(d.get("activation"), source)
    for i, row in enumerate(rows):
        where = f"layer {i}"
        if not isinstance(row, list) or len(row) != 4:
            raise ModelSpecError(f"{source}: {where} expected [from, number, module, args], found {row!r}"[:300])
        f, n, name, args = row
        if not isinstance(name, str) or name not in allowed:
            raise ModelSpecError(f"{source}: {where}: module {name!r} is not an allowed layer; expected one of "
                                 f"{', '.join(sorted(allowed))}"[:600])
        _check_from(f, len(rows), source, where)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or max(round(n * depth), 1) > lim.max_repeats:
            if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
                raise _over(source, f"{where} number", "max_repeats", lim.max_repeats, n)
            raise ModelSpecError(f"{source}: {where} number: expected an integer >= 1, found {n!r}")
        _check_args(args, source, where, lim)
        _check_row_sizes(name, args, source, where, lim)
    head = rows[-1][2]
    if head not in heads:
        raise ModelSpecError(f"{source}: last layer expected a detection head ({', '.join(heads)}), found "
                             f"'{head}'; only detection models are supported")


# --------------------------------------------------------------------------------------------- building
_FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
                        torch.empty_strided})


def _numel_of(args, kwargs) -> int | None:
    """Elements a factory call asks for: torch.empty(3, 4), torch.empty((3, 4)), torch.full((3, 4), v), size=."""
    size = kwargs.get("size", args[0] if args else None)
    if isinstance(size, (tuple, list, torch.Size)):
        dims = list(size)
    elif isinstance(size, int) and not isinstance(size, bool):
        dims = []
        for a in args:  # every leading int positional is a dimension
            if not isinstance(a, int) or isinstance(a, bool):
                break
            dims.append(a)
    else:
        return None
    total = 1
    for x in dims:
        if not isinstance(x, int):
            return None
        if x < 0:
            return -1
        total *= x
    return total


class AllocationGuard(TorchFunctionMode):
    """Refuse any single tensor factory call above ``max_elements``, and a running total above ``budget``.

    Checked before torch allocates, in Python integers, so neither a huge request nor an int64 overflow reaches C++.
    """

    def __init__(self, source: str, max_elements: int, budget: int):
        super().__init__()
        self.source, self.max_elements, self.budget, self.total = source, max_elements, budget, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES:
            n = _numel_of(args, kwargs)
            if n is not None:
                if n < 0:
                    raise ModelSpecError(f"{self.source}: a layer asks for a tensor with a negative size")
                if n > self.max_elements:
                    raise _over(self.source, "layer size", "max_params", self.max_elements,
                                f"one tensor of {n:,} elements")
                self.total += n
                if self.total > self.budget:
                    raise _over(self.source, "total size", "max_params", self.budget,
                                f"more than {self.total:,} elements allocated while building")
        return func(*args, **kwargs)


@contextlib.contextmanager
def guarded_build(source: str, lim: Limits | None = None, meta: bool = False):
    """Build inside this block: allocations are bounded, and with ``meta`` nothing is allocated at all."""
    lim = lim or limits()
    # parameters plus the stride-probing forward's activations: bounded by a few times the parameter limit
    guard = AllocationGuard(source, lim.max_params, 4 * lim.max_params + (1 << 28))
    with contextlib.ExitStack() as stack:
        if meta:
            stack.enter_context(torch.device("meta"))
        stack.enter_context(guard)
        try:
            yield guard
        except ModelSpecError:
            raise
        except (RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError, ZeroDivisionError,
                OverflowError, AssertionError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise ModelSpecError(f"{source}: the architecture cannot be built ({type(e).__name__}: {first})") \
                from None


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def check_modules(model: nn.Module, source: str, lim: Limits | None = None) -> int:
    """Every conv / pool / upsample / norm within the limits and the total parameters bounded; returns params."""
    lim = lim or limits()
    total = 0
    for name, m in model.named_modules():
        where = name or "model"
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            for what, value, limit_name, hi in (("in_channels", m.in_channels, "max_channels", lim.max_channels),
                                                ("out_channels", m.out_channels, "max_channels", lim.max_channels),
                                                ("groups", m.groups, "max_channels", lim.max_channels)):
                check_int(value, source, f"{where}.{what}", 1, hi, limit_name)
            for k in _pair(m.kernel_size):
                check_int(k, source, f"{where}.kernel_size", 1, lim.max_kernel, "max_kernel")
            for s in _pair(m.stride) + _pair(m.dilation):
                check_int(s, source, f"{where}.stride/dilation", 1, lim.max_stride, "max_stride")
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            for k in _pair(m.kernel_size):
                check_int(int(k), source, f"{where}.kernel_size", 1, lim.max_kernel, "max_kernel")
            for s in _pair(m.stride if m.stride is not None else 1):
                check_int(int(s), source, f"{where}.stride", 1, lim.max_stride, "max_stride")
        elif isinstance(m, nn.Upsample):
            if m.size is not None:
                raise ModelSpecError(f"{source}: {where}: nn.Upsample with a fixed output size is not accepted; "
                                     "use scale_factor")
            for s in _pair(m.scale_factor):
                if not (isinstance(s, (int, float)) and 0 < s <= lim.max_stride):
                    raise _over(source, f"{where}.scale_factor", "max_stride", lim.max_stride, s)
        elif isinstance(m, nn.ZeroPad2d):
            for p in m.padding:
                check_int(int(p), source, f"{where}.padding", 0, lim.max_kernel, "max_kernel")
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            check_int(m.num_features, source, f"{where}.num_features", 1, lim.max_channels, "max_channels")
    for p in model.parameters():
        total += p.numel()
    if total > lim.max_params:
        raise _over(source, "parameters", "max_params", lim.max_params, f"{total:,} parameters")
    return total


PROBE_SIZE = 256  # the input side ultralytics and yolov5 use to measure strides


def _probe_activations(layers: nn.Module, ch: int, source: str, lim: Limits) -> None:
    """Run the layer table (``m.f`` routing, as both families wire it) on a meta tensor and bound every output.

    Meta tensors carry shapes only, so an upsampling chain that would need terabytes is measured for free."""
    def numel(t) -> int:
        if isinstance(t, torch.Tensor):
            return t.numel()
        if isinstance(t, (list, tuple)):
            return max((numel(x) for x in t), default=0)
        if isinstance(t, dict):
            return max((numel(x) for x in t.values()), default=0)
        return 0

    x = torch.zeros(1, ch, PROBE_SIZE, PROBE_SIZE, device="meta")
    outputs = []
    layers.train()  # heads return their raw maps in training mode (no anchor bookkeeping)
    for i, m in enumerate(layers):
        f = getattr(m, "f", -1)
        if f != -1:
            x = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
        x = m(x)
        n = numel(x)
        if n > lim.max_activation:
            raise _over(source, f"layer {i} output", "max_activation", lim.max_activation,
                        f"{n:,} elements for a {PROBE_SIZE}x{PROBE_SIZE} input")
        outputs.append(x)


def dry_run(build, source: str, lim: Limits | None = None, probe_ch: int | None = None) -> int:
    """``build()`` on the meta device (no memory) under the guard, then ``check_modules`` and (with ``probe_ch``)
    a meta forward that bounds every layer's output; returns the parameter count."""
    lim = lim or limits()
    with guarded_build(source, lim, meta=True):
        model = build()
    params = check_modules(model, source, lim)
    if probe_ch is not None:
        with guarded_build(source, lim, meta=True), torch.no_grad():
            _probe_activations(model, probe_ch, source, lim)
    return params


def read_yaml_file(path, what: str = "model yaml", lim: Limits | None = None):
    """yaml.safe_load of a bounded, UTF-8 file; every failure is a ModelSpecError naming the file."""
    import yaml
    from pathlib import Path

    lim = lim or limits()
    p = Path(path)
    size = p.stat().st_size
    if size > lim.max_text:
        raise _over(str(p), "file size", "max_text", lim.max_text, f"{size:,} bytes")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ModelSpecError(f"{p}: expected a UTF-8 {what}, found undecodable bytes at offset {e.start}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())[:300]
        raise ModelSpecError(f"{p}: not valid yaml ({first})") from None
    except RecursionError:
        raise ModelSpecError(f"{p}: yaml nested too deeply") from None


def names_dict(names, source: str) -> dict | None:
    """Class names as {index: name} from a list or a dict; errors name the source and the field."""
    if names is None:
        return None
    if isinstance(names, (list, tuple)):
        return {i: str(n) for i, n in enumerate(names)}
    if not isinstance(names, dict):
        raise ValueError(f"{source}: field 'names' expected a list or dict, found {type(names).__name__}")
    try:
        out = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: field 'names' expected integer class indices, found {list(names)[:5]}"[:300]) \
            from e
    # class indices size lookup tables (evaluation's class -> category table has max index + 1 entries)
    if sorted(out) != list(range(len(out))):
        keys = sorted(out)
        raise ModelSpecError(f"{source}: field 'names' expected class indices 0..{len(out) - 1}, found {keys[:5]}"[:200]
                         + f" (smallest {keys[0]}, largest {keys[-1]})"[:100])
    return out
