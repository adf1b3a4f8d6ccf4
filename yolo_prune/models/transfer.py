"""Transfer a detector to another class count: keep every weight, give the head new class outputs.

``set_num_classes(det, nc, names)`` changes the model in place. Only the output convs whose channels depend on
the class count are replaced, each by a conv of the same input width (so a pruned model keeps its pruned widths;
nothing is rebuilt from the yaml). In those convs the class-independent rows (yolov5 / darknet: box and
objectness of every anchor) are copied, as are the rows of classes whose name exists in the old model (case and
spaces ignored); the other class rows are initialised the way the family's trainer initialises a new head
(each family module registers these parts: ``registry.ClassHead``):

* ultralytics ``Detect`` (``cv3`` / ``one2one_cv3`` last conv): PyTorch's default conv init, then the bias prior
  of ``Detect.bias_init``: log(5 / nc / (640 / stride)²), i.e. about 0.01 objects per cell at 640.
* yolov5 ``Detect`` (``m.i``) and darknet (the conv feeding each [yolo] layer): the default conv init plus the
  class prior of yolov5's ``_initialize_biases``: += log(0.6 / (nc - 0.99999)). Darknet's own C trainer leaves
  new biases at 0 (a 0.5 score for every class), but we train darknet heads with the yolov5 loss, so its prior.

Every other tensor is kept as it is (they all keep their shapes); the report counts them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import registry
from .spec import CompensatedConv2d, resized_conv, set_module


@dataclass
class ClassConv:
    """One output conv whose channels are ``na`` groups of ``nbox`` class-independent rows + ``nc`` class rows."""
    name: str  # module name inside the Detector
    na: int
    nbox: int
    stride: float


# ------------------------------------------------------------------------------------------------- generic part
def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


def _row_map(cc: ClassConv, old_nc: int, nc: int, src_of_class: list[int]) -> list[tuple[int, int]]:
    """(new row, old row) pairs to copy: the box/objectness rows of each anchor and the name-matched classes."""
    pairs = []
    for a in range(cc.na):
        o, n = a * (cc.nbox + old_nc), a * (cc.nbox + nc)
        pairs += [(n + r, o + r) for r in range(cc.nbox)]
        pairs += [(n + cc.nbox + k, o + cc.nbox + s) for k, s in enumerate(src_of_class) if s >= 0]
    return pairs


def _new_conv(old: nn.Conv2d, cc: ClassConv, old_nc: int, nc: int, src_of_class: list[int], init_bias) -> nn.Conv2d:
    cout = cc.na * (cc.nbox + nc)
    new = resized_conv(old, old.in_channels, cout, old.groups, bias=True)
    new.train(old.training)
    with torch.no_grad():
        nn.Conv2d.reset_parameters(new)  # the default init every family's new head starts from
        for a in range(cc.na):
            init_bias(new.bias[a * (cc.nbox + nc) + cc.nbox: (a + 1) * (cc.nbox + nc)], nc, cc.stride)
        if isinstance(new, CompensatedConv2d):
            new.compensation.zero_()  # new rows never saw the removed inputs
        rows = _row_map(cc, old_nc, nc, src_of_class)
        if rows:
            dst = torch.tensor([n for n, _ in rows])
            src = torch.tensor([o for _, o in rows])
            new.weight[dst] = old.weight[src].to(new.weight.dtype)
            if old.bias is not None:
                new.bias[dst] = old.bias[src].to(new.bias.dtype)
            if isinstance(new, CompensatedConv2d) and isinstance(old, CompensatedConv2d):
                new.compensation[dst] = old.compensation[src]
    return new


def set_num_classes(det, nc: int, names: dict | list | None = None) -> dict:
    """Give ``det`` (any family, pruned or not) ``nc`` classes named ``names`` ({i: name} or a list; default
    "0".."nc-1"), in place. Returns {"tensors", "kept", "partial", "new_classes", "matched", "old_nc", "nc",
    "summary"}: ``kept`` tensors are unchanged, ``partial`` ones are the replaced head convs' tensors (rows
    copied where they exist), ``matched`` the class names whose rows were carried over."""
    nc = int(nc)
    if nc < 1:
        raise ValueError(f"nc: expected >= 1, found {nc}")
    if names is None:
        names = {i: str(i) for i in range(nc)}
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else {int(k): str(v) for k, v in names.items()}
    if sorted(names) != list(range(nc)):
        raise ValueError(f"names: expected one name for each class 0..{nc - 1}, found {len(names)} names")
    family = next((f for f in registry.families() if f.name == det.family and f.head is not None), None)
    if family is None:
        raise ValueError(f"set_num_classes: unsupported model family {det.family!r} (expected one of "
                         f"{', '.join(f.name for f in registry.families() if f.head is not None)})")
    convs_of, init_bias, set_nc = family.head.convs, family.head.init_bias, family.head.set_nc
    old_nc, old_names = det.nc, dict(det.names)
    old_keys = {k: v.shape for k, v in det.state_dict().items()}
    lookup = {_norm(v): k for k, v in old_names.items()}
    # the old model's names are placeholders ("0", "class0") when it was built without names: match nothing then
    placeholder = all(_norm(v) in (str(k), f"class{k}") for k, v in old_names.items())
    src_of_class = [-1 if placeholder else lookup.get(_norm(names[k]), -1) for k in range(nc)]
    replaced, class_convs = [], convs_of(det)
    # same class count: the head is kept (only renamed), unless the names are the old ones in another order
    permuted = sorted(src_of_class) == list(range(nc)) and src_of_class != list(range(nc))
    if nc != old_nc or permuted:
        modules = dict(det.named_modules())
        for cc in class_convs:
            old = modules[cc.name]
            if old.out_channels != cc.na * (cc.nbox + old_nc):
                raise ValueError(f"{cc.name}: expected {cc.na} x ({cc.nbox} + {old_nc}) output channels, found "
                                 f"{old.out_channels}; not a class output conv")
            set_module(det, cc.name, _new_conv(old, cc, old_nc, nc, src_of_class, init_bias))
            replaced.append(cc.name)
        set_nc(det, nc)
    det.names = dict(names)
    if isinstance(det.spec, dict):
        det.spec["nc"], det.spec["names"] = nc, dict(names)
        if isinstance(det.spec.get("base"), dict):
            det.spec["base"]["nc"] = nc
    new_state = det.state_dict()
    partial = sorted(k for k in new_state if any(k.startswith(r + ".") for r in replaced))
    kept = [k for k in new_state if k not in partial and old_keys.get(k) == new_state[k].shape]
    matched = [names[k] for k, s in enumerate(src_of_class) if s >= 0]
    box_rows = "box/objectness rows and " if any(cc.nbox for cc in class_convs) else ""
    summary = (f"transferred {len(kept)}/{len(new_state)} tensors, new head for {nc} classes "
               f"({len(replaced)} output convs re-initialised; {box_rows}{len(matched)} classes kept by name"
               f"{': ' + ', '.join(matched[:5]) if matched else ''}) from a {old_nc}-class model"
               if replaced else f"kept {len(kept)}/{len(new_state)} tensors, {nc} classes as before")
    return {"tensors": len(new_state), "kept": len(kept), "partial": partial, "replaced": replaced,
            "new_classes": nc - len(matched), "matched": matched, "old_nc": old_nc, "nc": nc, "summary": summary}
