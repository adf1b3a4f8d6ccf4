"""Checkpoints: an explicit architecture spec plus tensors, written atomically, loaded with weights_only."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io import atomic_write

FORMAT = "yolo_prune"
VERSION = 1


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
    ckpt = {"format": FORMAT, "version": VERSION, "family": detector.family, "spec": spec,
            "state_dict": state, "names": detector.names, "meta": dict(meta or {})}
    ckpt.update(extra)
    return ckpt


def save(detector, path, meta: dict | None = None, **extra) -> Path:
    """Save {spec, state_dict, names, family, meta} (+ extra keys such as training state) atomically."""
    return atomic_torch_save(checkpoint_dict(detector, meta, **extra), path)


def is_ours(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def from_checkpoint(ckpt: dict, source: str = "checkpoint", device="cpu"):
    """Rebuild the exact architecture from the spec, then load the weights strictly."""
    from . import build_from_spec

    if ckpt.get("version", 0) > VERSION:
        raise ValueError(f"{source}: field 'version' expected <= {VERSION}, found {ckpt.get('version')}; "
                         "upgrade yolo_prune to read this file")
    for key in ("spec", "state_dict"):
        if key not in ckpt:
            raise ValueError(f"{source}: field '{key}' expected in a yolo_prune checkpoint, found keys {sorted(ckpt)}")
    det = build_from_spec(ckpt["spec"], source=source)
    missing, unexpected = det.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: state_dict does not match the spec: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return det.to(device).eval()
