"""Checkpoints: an explicit architecture spec plus tensors, written atomically, loaded with weights_only."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io import atomic_write

FORMAT = "yolo_prune"
VERSION = 1
# meta: {layer: output positions removed}, relative to the unpruned model (for feature distillation)
PLAN_KEY = "prune_plan"
MAX_PLAN_LAYERS, MAX_PLAN_POSITIONS = 1 << 16, 1 << 20


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """torch.save into a temp file in the same folder, then rename: a crash never leaves half a file."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def checkpoint_dict(detector, meta: dict | None = None, **extra) -> dict:
    from .spec import record_layers

    spec = dict(detector.spec)
    spec["layers"] = record_layers(detector)
    spec["names"] = detector.names
    spec["nc"] = detector.nc
    state = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
             for k, v in detector.state_dict().items()}
    meta = dict(meta or {})
    if detector.prune_plan and PLAN_KEY not in meta:  # kept through every later stage
        meta[PLAN_KEY] = detector.prune_plan
    ckpt = {"format": FORMAT, "version": VERSION, "family": detector.family, "spec": spec,
            "state_dict": state, "names": detector.names, "meta": meta}
    ckpt.update(extra)
    return ckpt


def save(detector, path, meta: dict | None = None, **extra) -> Path:
    """Save {spec, state_dict, names, family, meta} (+ extra keys such as training state) atomically."""
    return atomic_torch_save(checkpoint_dict(detector, meta, **extra), path)


def is_ours(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def from_checkpoint(ckpt: dict, source: str = "checkpoint", device="cpu"):
    """Rebuild the exact architecture from the spec, then load the weights strictly.

    The spec is validated as plain, bounded data before anything is built (validate.walk_plain); the weights must
    be tensors of exactly the shapes the spec builds.
    """
    from .registry import build_from_spec
    from .validate import ModelSpecError, walk_plain

    version = ckpt.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ModelSpecError(f"{source}: field 'version' expected an integer 0..{VERSION}, found {version!r}"[:300])
    if version > VERSION:
        raise ModelSpecError(f"{source}: field 'version' expected <= {VERSION}, found {version}; "
                             "upgrade yolo_prune to read this file")
    for key in ("spec", "state_dict"):
        if key not in ckpt:
            raise ModelSpecError(f"{source}: field '{key}' expected in a yolo_prune checkpoint, found keys "
                                 f"{sorted(map(str, ckpt))}"[:400])
    if not isinstance(ckpt["spec"], dict):
        raise ModelSpecError(f"{source}: field 'spec' expected a mapping, found {type(ckpt['spec']).__name__}")
    walk_plain(ckpt["spec"], source, "spec")
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelSpecError(f"{source}: field 'state_dict' expected a mapping of names to tensors")
    det = build_from_spec(ckpt["spec"], source=source)
    fresh = det.state_dict()
    missing = [k for k in fresh if k not in state]
    unexpected = [k for k in state if k not in fresh]
    if missing or unexpected:
        raise ModelSpecError(f"{source}: state_dict does not match the spec: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in fresh.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise ModelSpecError(f"{source}: state_dict tensors do not have the shapes the spec builds (found vs "
                             f"expected): {wrong[:3]}")
    det.load_state_dict(state, strict=True)
    meta = ckpt.get("meta")
    det.prune_plan = checked_plan(meta.get(PLAN_KEY), source) if isinstance(meta, dict) else None
    return det.to(device).eval()


def checked_plan(plan, source: str) -> dict[str, list[int]] | None:
    """A checkpoint's prune plan as {layer name: sorted removed positions}, or an error naming what is wrong."""
    from .validate import ModelSpecError

    if plan is None:
        return None
    field = f"{source}: field 'meta.{PLAN_KEY}'"
    if not isinstance(plan, dict) or len(plan) > MAX_PLAN_LAYERS:
        raise ModelSpecError(f"{field} expected a mapping of at most {MAX_PLAN_LAYERS} layer names to positions, "
                             f"found {type(plan).__name__}"[:300])
    out, total = {}, 0
    for name, positions in plan.items():
        if not isinstance(name, str) or not isinstance(positions, (list, tuple)):
            raise ModelSpecError(f"{field} expected layer name -> list of positions, found {name!r}"[:300])
        total += len(positions)
        if total > MAX_PLAN_POSITIONS:
            raise ModelSpecError(f"{field} expected at most {MAX_PLAN_POSITIONS} positions in all, found more")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in positions):
            raise ModelSpecError(f"{field}[{name!r}] expected non-negative integers"[:300])
        out[name] = sorted(set(positions))
    return out


def compose_plans(earlier: dict | None, now: dict, widths_before: dict) -> dict[str, list[int]]:
    """The plan of two cuts in a row, in the first model's positions. ``now`` indexes the already-cut model,
    whose output width per layer ``widths_before`` gives ({layer: [in, out]})."""
    earlier = earlier or {}
    merged = {k: list(v) for k, v in earlier.items()}
    for name, positions in now.items():
        gone = set(earlier.get(name, ()))
        kept = [i for i in range(int(widths_before[name][1]) + len(gone)) if i not in gone]
        merged[name] = sorted(gone | {kept[j] for j in positions})
    return merged
