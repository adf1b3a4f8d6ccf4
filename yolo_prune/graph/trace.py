"""Trace a model once and find which channels are coupled.

We run the model on a small example input under a ``TorchDispatchMode`` and follow every channel of every
tensor along dim 1. Each channel carries a label; labels are merged (union-find) when two channels must be pruned
together: an element-wise add/mul couples channel i of both operands, a concat lays labels side by side, an
equal split/chunk couples position i of every part (so chunks stay equal after pruning), pools and upsampling pass
labels through. Layers with weights (conv, linear, norms) are handled by their ``yolo_prune.layers`` handler,
which says how a call passes labels (a dense conv consumes its input's labels and creates fresh ones for its
outputs, a BN or depthwise conv passes them through). Any op we do not understand marks the channels it touches
as fixed, so an unknown op can make pruning more conservative but never wrong.

Working on aten ops (not torch.fx) means ultralytics' dynamic heads, torchvision models and darknet routes all
trace the same way, and parameters with ``requires_grad=False`` trace like any other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..layers import ChannelFlow, Role, handler_for, layer_ops
from ..layers import kept_modes

aten = torch.ops.aten

# Ops that keep dim 1 as it is (when the output has the same channel count as the input).
_CHANNELWISE = {
    "max_pool2d_with_indices", "max_pool2d", "avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool2d",
    "adaptive_max_pool2d", "upsample_nearest2d", "upsample_bilinear2d", "_upsample_nearest_exact2d",
    "_upsample_bilinear2d_aa", "upsample_bicubic2d", "clone", "_to_copy", "contiguous", "detach", "alias",
    "dropout", "native_dropout", "hardswish", "hardswish_", "lift_fresh", "max_pool1d", "avg_pool1d",
    "replication_pad2d", "reflection_pad2d", "_pad_enum", "_pad_circular",
}
_VIEWS = {"view", "_unsafe_view", "reshape", "_reshape_alias", "flatten"}
_NO_DATA = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "sym_size",
            "sym_stride", "sym_numel", "size", "stride", "is_same_size", "_local_scalar_dense", "item",
            "lift_fresh", "scalar_tensor", "empty", "zeros", "ones", "arange", "full", "equal", "allclose",
            "new_full", "new_zeros", "new_ones", "new_empty", "new_empty_strided", "new_tensor"}


class TraceError(RuntimeError):
    """A model could not be traced; the message names the layer or op."""


class _UnionFind:
    """Union-find over channel labels; a set is fixed when any of its members is."""

    def __init__(self):
        self.parent: list[int] = []
        self.fixed: list[bool] = []

    def make(self, n: int, fixed: bool = False) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.fixed.extend([fixed] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def is_fixed(self, a: int) -> bool:
        return self.fixed[self.find(int(a))]

    def fix(self, a: int) -> None:
        self.fixed[self.find(int(a))] = True

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            if ra < rb:
                ra, rb = rb, ra
            self.parent[ra] = rb
            self.fixed[rb] = self.fixed[rb] or self.fixed[ra]


@dataclass(frozen=True)
class Slot:
    """One prunable index of one layer; ``role`` says which side of the layer it is (see ``Role``)."""
    module: str
    role: Role
    index: int


@dataclass
class ConvInfo:
    """What the trace learned about a conv/linear call: spatial output size, kernel, and the BN right after."""
    out_hw: tuple = (1, 1)
    kernel: int = 1
    groups: int = 1
    bn: str | None = None
    calls: int = 0


@dataclass
class Group:
    """Channels that must be removed together, laid out as ``width`` aligned positions.

    ``channels[k]`` is the list of slots of position k. Every position of a group touches the same layers in
    the same roles, which is why a group has one width that ``round_to`` applies to.
    """
    gid: int
    channels: list  # list[list[Slot]]
    signature: tuple  # sorted (module, role, multiplicity)

    @property
    def width(self) -> int:
        return len(self.channels)

    def modules(self) -> list[str]:
        return sorted({m for m, _, _ in self.signature})

    def bn_slots(self, k: int) -> list[Slot]:
        return [s for s in self.channels[k] if s.role is Role.BN]

    def __str__(self) -> str:
        producers = [(m, r, n) for m, r, n in self.signature if r.produces]
        head = producers[0] if producers else self.signature[0]
        lines = [f"Group {self.gid}: {self.width} channels, triggered by pruning {head[0]} "
                 f"({head[1].description})"]
        for m, r, n in self.signature:
            what = r.description
            if n > 1:
                what += f", {n} positions per channel (concat/split/flatten copies)"
            trig = "=>" if (m, r, n) != head else "  "
            lines.append(f"  {trig} prune {what} of {m}")
        return "\n".join(lines)


@dataclass
class DependencyGraph:
    model: nn.Module
    groups: list
    fixed_reasons: dict = field(default_factory=dict)   # module -> why some of its channels are fixed
    not_run: list = field(default_factory=list)          # layers with weights that never ran in the trace
    conv_info: dict = field(default_factory=dict)        # module name -> ConvInfo
    example_shape: tuple = ()

    def __str__(self) -> str:
        return "\n".join(str(g) for g in self.groups)

    def prunable_modules(self) -> set:
        return {m for g in self.groups for m in g.modules()}

    def fold_bias_target(self, name: str) -> str | None:
        """The layer right after ``name`` that can absorb a per-channel constant added to ``name``'s output
        (a BN's running_mean), or None: then β compensation folds into ``name``'s own bias."""
        info = self.conv_info.get(name)
        if info is None or info.bn is None:
            return None
        norm = self.model.get_submodule(info.bn)
        handler = handler_for(norm)
        return info.bn if handler is not None and handler.absorbs_shift(norm) else None


class _Tracer(TorchDispatchMode):
    def __init__(self, model: nn.Module, fixed_out: set[str]):
        super().__init__()
        self.uf = _UnionFind()
        self.labels: dict[int, np.ndarray] = {}
        self.keep: list = []  # holds traced tensors so their ids stay unique
        self.fixed_reasons: dict[str, str] = {}
        self.slots: list[tuple[int, Slot]] = []
        self.first_slot_label: dict[Slot, int] = {}
        self.conv_info: dict[str, ConvInfo] = {}
        self.fixed_out = fixed_out
        self.params: dict[int, tuple] = {}  # data_ptr -> (layer name, module, handler, is aux term)
        self.conv_out_labels: dict[str, np.ndarray] = {}  # conv -> labels of its latest output
        self.layer_ops = layer_ops()  # aten op -> a handler that reads its operands
        for name, m in model.named_modules():
            handler = handler_for(m)
            for ptr, aux in (handler.trace_keys(m) if handler is not None else {}).items():
                self.params[ptr] = (name, m, handler, aux)
        self.module_stack: list[str] = []
        self.boundary: set[str] = set()
        self.producer_of: dict[int, str] = {}  # id(tensor) -> conv that produced it (for conv -> BN)
        self.ran: set[str] = set()

    # -- label helpers -------------------------------------------------------------------------------
    def _get(self, t):
        if isinstance(t, torch.Tensor):
            return self.labels.get(id(t))
        return None

    def _set(self, t: torch.Tensor, labels: np.ndarray):
        self.labels[id(t)] = labels
        self.keep.append(t)

    def _fix(self, labels: np.ndarray | None, why: str):
        if labels is None:
            return
        for lab in labels:
            self.uf.fix(lab)
        if self.module_stack:
            self.fixed_reasons.setdefault(self.module_stack[-1], why)

    def _fresh(self, n: int, fixed: bool = False) -> np.ndarray:
        return self.uf.make(n, fixed)

    def _slot(self, label: int, slot: Slot):
        first = self.first_slot_label.get(slot)
        if first is None:
            self.first_slot_label[slot] = int(label)
            self.slots.append((int(label), slot))
        else:  # a layer called twice (shared weights) must lose the same channel in both calls
            self.uf.union(first, int(label))

    # -- module boundaries (for ops whose shapes depend on channel counts we cannot see) -------------------
    def push(self, name):
        self.module_stack.append(name)

    def pop(self, name, inputs, outputs):
        self.module_stack.pop()
        if name in self.boundary:
            for t in _flat_tensors((inputs, outputs)):
                self._fix(self._get(t), f"{name}: uses channel counts in reshapes")

    # -- dispatch ------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            self._record(func, args, kwargs, out)
        except TraceError:
            raise
        except Exception as e:  # name the op and the layer it ran in
            where = self.module_stack[-1] if self.module_stack else "<root>"
            raise TraceError(f"could not trace op {func} in layer '{where}': {e}") from e
        return out

    def _record(self, func, args, kwargs, out):
        name = func._overloadpacket.__name__ if hasattr(func, "_overloadpacket") else str(func)
        tensors_in = [a for a in _flat_tensors((args, kwargs))]
        labeled_in = [t for t in tensors_in if id(t) in self.labels]
        if name in self.layer_ops:
            return self._layer_op(name, args, out)
        if not labeled_in:
            return
        if name in ("cat", "concat", "concatenate"):
            return self._cat(args, kwargs, out)
        if name in ("split", "split_with_sizes", "chunk", "unsafe_split", "unsafe_split_with_sizes", "unbind"):
            return self._split(name, args, kwargs, out)
        if name == "slice":
            return self._slice(args, out)
        if name in _VIEWS:
            return self._view(args, out)
        if name in ("expand", "unsqueeze", "squeeze", "permute", "transpose", "mean", "sum", "amax", "_softmax",
                    "softmax", "constant_pad_nd", "pad"):
            return self._shape_op(name, args, kwargs, out)
        if name in _NO_DATA:
            return
        if torch.Tag.pointwise in func.tags or name in _CHANNELWISE:
            return self._pointwise(name, args, kwargs, out, tensors_in)
        self._opaque(name, labeled_in, out)

    def _opaque(self, name, labeled_in, out):
        reason = f"op aten.{name} mixes channels"
        touched_free = False
        for t in labeled_in:
            labs = self.labels[id(t)]
            if not all(self.uf.is_fixed(x) for x in labs):
                touched_free = True
            self._fix(labs, reason)
        if touched_free and self.module_stack:
            self.boundary.add(self.module_stack[-1])
        for o in _flat_tensors(out):
            if o.dim() >= 2:
                self._set(o, self._fresh(o.shape[1], fixed=True))

    # -- layers with weights: their handler says how a call passes labels -------------------------------------
    def _layer_op(self, op, args, out):
        x, key = self.layer_ops[op].operands(op, args)
        y = out[0] if isinstance(out, (tuple, list)) else out
        entry = self.params.get(key.data_ptr()) if isinstance(key, torch.Tensor) else None
        if entry is not None and op not in entry[2].ops:
            entry = None
        if entry is None:  # a functional call with weights that no known layer owns
            if id(x) in self.labels:
                self._opaque(f"{op} (weights not owned by a known layer)", [x], out)
            return
        name, m, handler, aux = entry
        if aux:  # a per-output-channel term of a layer (CompensatedConv2d's border): it carries the layer's labels
            if name in self.conv_out_labels:
                self._set(y, self.conv_out_labels[name])
            elif id(x) in self.labels:
                self._opaque(f"{op} (weights not owned by a known layer)", [x], out)
            return
        self.ran.add(name)
        labs = self._layer_labels(name, handler.channel_flow(m, x, args), handler.widths(m), x)
        self._set(y, labs)
        handler.note_call(self, name, m, args, x, y)

    def _layer_labels(self, name: str, flow: ChannelFlow, widths: tuple, x) -> np.ndarray:
        """Record the slots of one layer call and return the labels of its output."""
        n_in, n_out = widths
        lab_x = self._get(x)
        lab_in = lab_x if lab_x is not None and flow.input_fixed is None else self._fresh(n_in, fixed=True)
        if flow.input_fixed is not None:
            self._fix(lab_x, f"{name}: {flow.input_fixed}")
        if flow.fixed is not None:
            self._fix(lab_in, f"{name}: {flow.fixed} keeps its channels")
            self.fixed_reasons.setdefault(name, flow.fixed)
            return self._fresh(n_out, fixed=True)
        if flow.block > 1:  # e.g. a GroupNorm group goes whole
            for start in range(0, len(lab_in) - flow.block + 1, flow.block):
                for lab in lab_in[start + 1:start + flow.block]:
                    self.uf.union(lab_in[start], lab)
        for j, lab in enumerate(lab_in):
            self._slot(lab, Slot(name, flow.in_role, j))
        if flow.out_role is None:  # pass-through: output channel j is input channel j
            if flow.in_role.produces and name in self.fixed_out:
                self._fix(lab_in, f"{name}: output may not be pruned")
            return lab_in
        labs = self._fresh(n_out, fixed=name in self.fixed_out)
        for j, lab in enumerate(labs):
            self._slot(lab, Slot(name, flow.out_role, j))
        return labs

    # bookkeeping the handlers report through (``LayerHandler.note_call``)
    def call_info(self, name: str) -> ConvInfo:
        """Count one call of a computing layer; its handler fills in the geometry."""
        info = self.conv_info.setdefault(name, ConvInfo())
        info.calls += 1
        return info

    def note_producer(self, name: str, y: torch.Tensor) -> None:
        """``y`` is ``name``'s output: a BN reading it is that layer's BN, an aux term carries its labels."""
        self.conv_out_labels[name] = self._get(y)
        self.producer_of[id(y)] = name

    def note_bn_after(self, bn: str, x: torch.Tensor) -> None:
        conv = self.producer_of.get(id(x))
        if conv is not None and conv in self.conv_info:
            self.conv_info[conv].bn = bn

    def _cat(self, args, kwargs, out):
        tensors = list(args[0])
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        dim = dim % out.dim()
        parts = []
        for t in tensors:
            labs = self._get(t)
            if labs is None:
                labs = self._fresh(t.shape[1] if t.dim() > 1 else 1, fixed=True)
            parts.append(labs)
        if dim == 1:
            self._set(out, np.concatenate(parts))
        elif dim == 0 or out.dim() < 2:
            self._opaque("cat", [t for t in tensors if id(t) in self.labels], out)
        else:  # concat along space: channel j of every input is channel j of the output
            base = parts[0]
            for p in parts[1:]:
                for a, b in zip(base, p):
                    self.uf.union(a, b)
            self._set(out, base)

    def _split(self, name, args, kwargs, out):
        x = args[0]
        labs = self._get(x)
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 0) % x.dim() if name != "unbind" else \
            (args[1] if len(args) > 1 else 0) % x.dim()
        outs = list(out)
        if name == "unbind" or dim == 0:
            self._opaque(name, [x], out)
            return
        if dim != 1:
            for o in outs:
                self._set(o, labs)
            return
        sizes = [o.shape[1] for o in outs]
        if len(set(sizes)) == 1:
            c = sizes[0]
            for k in range(1, len(outs)):
                for i in range(c):
                    self.uf.union(labs[i], labs[k * c + i])
        else:
            self._fix(labs, f"unequal split {sizes} along channels")
        start = 0
        for o, s in zip(outs, sizes):
            self._set(o, labs[start:start + s])
            start += s

    def _slice(self, args, out):
        x = args[0]
        labs = self._get(x)
        dim = (args[1] if len(args) > 1 else 0) % x.dim()
        start = args[2] if len(args) > 2 and args[2] is not None else 0
        end = args[3] if len(args) > 3 and args[3] is not None else x.shape[dim]
        step = args[4] if len(args) > 4 else 1
        if dim == 0:
            if out.shape[0] == x.shape[0]:
                self._set(out, labs)
            else:
                self._opaque("slice(batch)", [x], out)
            return
        if dim != 1:
            self._set(out, labs)
            return
        c = x.shape[1]
        start, end = max(0, min(start, c)), max(0, min(end, c))
        n = end - start
        if step == 1 and n == c:
            self._set(out, labs)
        elif step == 1 and n > 0 and c % n == 0 and start % n == 0:  # one of c/n equal parts (darknet groups)
            for k in range(1, c // n):
                for i in range(n):
                    self.uf.union(labs[i], labs[k * n + i])
            self._set(out, labs[start:end])
        else:
            self._fix(labs, f"channel slice [{start}:{end}:{step}] of {c}")
            self._set(out, labs[start:end:step])

    def _view(self, args, out):
        x = args[0]
        labs = self._get(x)
        if x.dim() >= 2 and out.dim() >= 2 and out.shape[0] == x.shape[0]:
            if out.shape[1] == x.shape[1] and math.prod(out.shape[2:]) == math.prod(x.shape[2:]):
                self._set(out, labs)
                return
            rest = math.prod(x.shape[2:])
            if out.dim() == 2 and out.shape[1] == x.shape[1] * rest:  # flatten -> linear
                self._set(out, np.repeat(labs, rest))
                return
        self._opaque("view", [x], out)

    def _shape_op(self, name, args, kwargs, out):
        x = args[0]
        labs = self._get(x)
        keeps = False
        if isinstance(out, torch.Tensor) and out.dim() >= 2 and x.dim() >= 2 and out.shape[0] == x.shape[0] \
                and out.shape[1] == x.shape[1]:
            if name == "expand" or name == "constant_pad_nd" or name == "pad":
                pad = list(args[1]) if len(args) > 1 and name != "expand" else []
                keeps = len(pad) <= 2 * (x.dim() - 2)
            elif name in ("unsqueeze", "squeeze"):
                d = args[1] if len(args) > 1 else None
                dims = d if isinstance(d, (list, tuple)) else [d]
                keeps = d is not None and all(di is not None and (di % max(out.dim(), x.dim())) >= 2 for di in dims)
            elif name in ("permute",):
                keeps = list(args[1])[:2] == [0, 1]
            elif name == "transpose":
                d0, d1 = args[1] % x.dim(), args[2] % x.dim()
                keeps = d0 >= 2 and d1 >= 2
            elif name in ("mean", "sum", "amax"):
                dims = args[1] if len(args) > 1 else None
                dims = [dims] if isinstance(dims, int) else dims
                keeps = dims is not None and all(d % x.dim() >= 2 for d in dims)
            elif name in ("_softmax", "softmax"):
                keeps = args[1] % x.dim() >= 2
        if keeps:
            self._set(out, labs)
        else:
            self._opaque(name, [x], out)

    def _pointwise(self, name, args, kwargs, out, tensors_in):
        outs = _flat_tensors(out)
        if not outs:
            return
        o = outs[0]
        if o.dim() < 2:
            self._opaque(name, [t for t in tensors_in if id(t) in self.labels], out)
            return
        c = o.shape[1]
        merged = None
        for t in tensors_in:
            # broadcast: a tensor of k dims aligns with the output's last k dims
            d = 1 - (o.dim() - t.dim())
            size = t.shape[d] if d >= 0 and t.dim() > 0 else 1
            if size == 1:
                continue
            if d != 1 and id(t) in self.labels:  # its own channel dim lands elsewhere: cannot follow it
                self._opaque(name, [x for x in tensors_in if id(x) in self.labels], out)
                return
            labs = self._get(t) if d == 1 else None
            if labs is None:  # an untracked per-channel tensor (buffer, constant): its channels must stay
                labs = self._fresh(size, fixed=True)
            if merged is None:
                merged = labs
            else:
                for a, b in zip(merged, labs):
                    self.uf.union(a, b)
        if merged is None:
            merged = self._fresh(c, fixed=True)
        for ot in outs:
            if ot.dim() >= 2 and ot.shape[1] == len(merged):
                self._set(ot, merged)


def _flat_tensors(obj) -> list:
    out = []
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            out.append(o)
        elif isinstance(o, (list, tuple)):
            stack.extend(reversed(o))
        elif isinstance(o, dict):
            stack.extend(reversed(list(o.values())))
    return out


def _default_fixed_outputs(model: nn.Module) -> set[str]:
    heads = getattr(model, "head_modules", None)
    return set(heads()) if callable(heads) else set()


def trace(model: nn.Module, example: torch.Tensor | None = None, imgsz: int = 64,
          ignore: list[str] | tuple = (), fixed_outputs: set[str] | None = None) -> DependencyGraph:
    """Trace ``model`` on ``example`` (default: zeros of 1x3ximgszximgsz) and build its channel groups.

    ``fixed_outputs``: layers whose output channels may never change (default: the detector's head layers).
    ``ignore``: layers whose channels (in and out) must not be pruned.
    """
    fixed_out = set(fixed_outputs) if fixed_outputs is not None else _default_fixed_outputs(model)
    ref = next(iter(model.parameters()))
    if example is None:
        example = torch.zeros(1, 3, imgsz, imgsz)
    example = example.to(device=ref.device, dtype=ref.dtype)
    names = dict((id(m), n) for n, m in model.named_modules())
    tracer = _Tracer(model, fixed_out)
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(lambda mod, inp: tracer.push(names[id(mod)])))
        handles.append(m.register_forward_hook(lambda mod, inp, out: tracer.pop(names[id(mod)], inp, out)))
    try:
        with kept_modes(model), torch.no_grad(), tracer:
            model.eval()
            tracer._set(example, tracer._fresh(example.shape[1], fixed=True))
            out = model(example)
            for t in _flat_tensors(out):
                tracer._fix(tracer._get(t), "network output")
    finally:
        for h in handles:
            h.remove()
    return _build_graph(model, tracer, ignore, tuple(example.shape))


def _build_graph(model, tracer: _Tracer, ignore, example_shape) -> DependencyGraph:
    uf = tracer.uf
    ignore = set(ignore)
    fixed_roots = set()  # a root's flag already covers its whole set
    classes: dict[int, list[Slot]] = {}
    for lab, slot in tracer.slots:
        classes.setdefault(uf.find(lab), []).append(slot)
    for root, slots in classes.items():
        if any(s.module in ignore for s in slots):
            fixed_roots.add(root)
    # a class is prunable only if something produces it (otherwise it comes from the input or a fixed op)
    by_signature: dict[tuple, list] = {}
    for root, slots in classes.items():
        if root in fixed_roots or uf.fixed[root] or not any(s.role.produces for s in slots):
            continue
        counts: dict[tuple, int] = {}
        for s in slots:
            counts[(s.module, s.role)] = counts.get((s.module, s.role), 0) + 1
        sig = tuple(sorted((m, r, n) for (m, r), n in counts.items()))
        by_signature.setdefault(sig, []).append(sorted(slots, key=lambda s: (s.module, s.role, s.index)))
    groups = []
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    for sig, chans in sorted(by_signature.items(), key=lambda kv: min(order.get(m, 0) for m, _, _ in kv[0])):
        chans.sort(key=lambda sl: min(s.index for s in sl))
        groups.append(Group(len(groups), chans, sig))
    not_run = [n for n, m in model.named_modules() if handler_for(m) is not None and n not in tracer.ran]
    return DependencyGraph(model, groups, dict(tracer.fixed_reasons), not_run, tracer.conv_info, example_shape)
