"""The model family registry: everything yolo_prune knows about one family, registered by that family's module.

Each family module (``ultralytics.py``, ``yolov5_legacy.py``, ``darknet.py``) calls ``register(Family(...))`` at
import; ``models/__init__.py`` imports them, so the registry is complete whenever ``yolo_prune.models`` is
imported. The loader (``models.load``), the checkpoint builder (``build_from_spec``), the loss factory
(``train.losses.build_loss``), the native writer (``models.native``), the class transfer (``models.transfer``)
and the unpickler's call table (``models.safe_pickle``) look a family up here instead of branching on its name.

This module imports only ``validate``, ``spec`` and ``offline`` (no family module), so every module may use it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .validate import ModelSpecError

__all__ = ["Family", "ClassHead", "register", "unregister", "get", "families", "for_file", "build_from_spec"]


@dataclass(frozen=True)
class ClassHead:
    """The class-dependent parts of a family's head (``models.transfer.set_num_classes`` uses them).

    * ``convs(det)``: the output convs whose channels depend on the class count (``transfer.ClassConv`` each);
    * ``init_bias(bias, nc, stride)``: the class-row bias prior the family's trainer gives a new head;
    * ``set_nc(det, nc)``: the attributes that carry the class count (head, yaml, ...)."""
    convs: Callable
    init_bias: Callable
    set_nc: Callable


@dataclass(frozen=True)
class Family:
    """One model family.

    * ``name``: the ``Detector.family`` / checkpoint ``spec.family`` value;
    * ``sniff(path, pickle_globals)``: whether ``load(path)`` belongs to this family; ``pickle_globals`` is the set
      of "module.qualname" a ``.pt`` references (read without executing anything), None for other files;
    * ``load(path, nc=None, weights=None)``: the Detector of a file this family sniffed;
    * ``build(base, nc=None, names=None, source="")``: the full-width architecture from a spec's ``base``;
    * ``loss``: the key of its loss in ``train.losses.LOSSES``;
    * ``pickle_policy(module, name)``: what its ``.pt`` files may reference (``models.safe_pickle`` policies);
    * ``pickle_calls()``: extra callables its pickles call besides torch/numpy ones (the unpickler's call table);
    * ``write_native(detector, out)``: writes the family's own file(s) beside ``out`` (our .pt), returns their
      paths; ``native_kind`` names that format in messages;
    * ``head``: its ``ClassHead`` (class transfer)."""
    name: str
    sniff: Callable[[Path, Optional[frozenset]], bool]
    load: Callable
    build: Callable
    loss: str
    pickle_policy: Optional[Callable] = None
    pickle_calls: Optional[Callable[[], set]] = None
    write_native: Optional[Callable] = None
    native_kind: str = ""
    head: Optional[ClassHead] = None


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add (or replace: re-importing a module registers again) a family. Sniffing asks the families in the order
    they registered and takes the first that claims a file, so sniffers should not overlap."""
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    _FAMILIES.pop(name, None)


def families() -> list[Family]:
    return list(_FAMILIES.values())


def get(name, source: str = "spec") -> Family:
    """The registered family ``name``; a one-line ModelSpecError naming the registered ones otherwise."""
    family = _FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise ModelSpecError(f"{source}: spec field 'family': expected one of {', '.join(_FAMILIES)}, "
                             f"found {name!r}"[:200])
    return family


def for_file(path: str | os.PathLike, pickle_globals: frozenset | None = None) -> Family | None:
    """The first registered family that sniffs ``path`` as its own, or None."""
    path = Path(path)
    return next((f for f in _FAMILIES.values() if f.sniff(path, pickle_globals)), None)


def build_from_spec(spec: dict, source: str = "spec"):
    """Build the base architecture of the spec's family, then apply the recorded per-layer shapes (pruned widths)."""
    from .. import offline
    from .spec import apply_layers
    from .validate import walk_plain

    if not isinstance(spec, dict):
        raise ModelSpecError(f"{source}: spec expected a mapping, found {type(spec).__name__}")
    walk_plain(spec, source, "spec")
    for key in ("family", "base"):
        if key not in spec:
            raise ModelSpecError(f"{source}: spec field '{key}' is missing (found {sorted(map(str, spec))})")
    if spec.get("layers") is not None and not isinstance(spec["layers"], dict):
        raise ModelSpecError(f"{source}: spec field 'layers' expected a mapping, found {type(spec['layers']).__name__}")
    family = get(spec["family"], source)
    offline.apply()  # before the family builder imports ultralytics
    det = family.build(spec["base"], nc=spec.get("nc"), names=spec.get("names"), source=source)
    if spec.get("layers"):
        apply_layers(det, spec["layers"], source=source)
    return det
