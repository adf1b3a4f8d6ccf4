"""How one pruning pass runs, beside *what* it prunes (``PruneSpec``): three small option objects.

``prune`` / ``prune_file`` take a ``PruneSpec`` plus these; ``prune_model`` / ``prune_checkpoint`` keep the flat
keyword form (``prune_model(m, 0.5, criterion="l2", imgsz=320)``) and sort each keyword into its object here, so
the keyword names and their defaults live in one place and an unknown keyword is an error, as in a signature.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .spec import PruneSpec


@dataclass(frozen=True)
class Calibration:
    """Unlabeled images for ``compensate="reconstruct"`` and ``criterion="recon"``: ``images`` is a tensor
    (N, 3, H, W) in [0, 1] (``reconstruct.calibration_batch``) or, for a file-level prune, ``source`` (a data yaml:
    its train split, or an image folder / list / file) read as ``count`` images letterboxed to ``imgsz``.
    ``positions``: spatial positions per layer in the normal equations; ``alpha``: the pull toward the original
    weights. ``gap(pruned, original, images) -> float``: how far the pruned model's outputs are from the original's
    (``train.unlabeled.student_teacher_gap``, which the tools pass); ``macs_exponent="search"`` keeps the candidate
    with the smallest gap on the first ``gap_images`` images."""
    images: torch.Tensor | None = None
    source: str | Path | None = None
    count: int = 128
    imgsz: int = 320
    positions: int = 16384
    alpha: float = 1e-3
    gap: object = None
    gap_images: int = 64

    def describe(self) -> dict | None:
        """What a checkpoint's metadata says about the calibration (None without a source)."""
        return None if self.source is None else {"source": str(self.source), "images": self.count,
                                                 "imgsz": self.imgsz}


@dataclass(frozen=True)
class LatencySetup:
    """Where ``target_latency`` is measured: ``backend`` (a runtime registry name), ``threads``; ``measurer``
    replaces the real measurement (tests); ``cache``: the folder of measured ratios (default
    ~/.cache/yolo_prune/latency)."""
    backend: str = "ort-cpu"
    threads: int | None = 1
    measurer: object = None
    cache: str | Path | None = None


@dataclass(frozen=True)
class PassOptions:
    """The pass itself: ``imgsz`` (MACs and latency are counted there unless ``profile_size``), ``trace_size``
    and ``example`` (the traced input), ``seed``, ``verify`` (compare pruned and unpruned outputs), ``progress``."""
    imgsz: int = 640
    trace_size: int = 64
    profile_size: int | None = None
    example: torch.Tensor | None = None
    seed: int = 0
    verify: bool = True
    progress: bool = True


# keyword -> (object, field) for the flat forms; PruneSpec's own fields go to the spec
_MODEL_KEYWORDS = {"calib": ("calibration", "images"), "calib_positions": ("calibration", "positions"),
                   "recon_alpha": ("calibration", "alpha"), "calib_gap": ("calibration", "gap"), "backend": ("latency", "backend"),
                   "threads": ("latency", "threads"), "latency_measurer": ("latency", "measurer"),
                   "latency_cache": ("latency", "cache"),
                   **{f.name: ("run", f.name) for f in dataclasses.fields(PassOptions)}}
_FILE_KEYWORDS = {**_MODEL_KEYWORDS, "calib": ("calibration", "source"), "calib_images": ("calibration", "count"),
                  "calib_imgsz": ("calibration", "imgsz")}
_SPEC_FIELDS = {f.name for f in dataclasses.fields(PruneSpec)}
_OBJECTS = {"calibration": Calibration, "latency": LatencySetup, "run": PassOptions}


def spec_from_arguments(*, compensate="bias", **selection) -> PruneSpec:
    """The PruneSpec of the flat keywords (``compensate`` True/False/None: bias/off)."""
    if isinstance(compensate, (bool, type(None))):
        compensate = "bias" if compensate else "off"
    return PruneSpec(compensate=compensate, **selection)


def sort_keywords(function: str, keywords: dict, spec: PruneSpec | None, *, file_level: bool = False,
                  build_spec: bool = True) -> tuple[PruneSpec | None, dict]:
    """Split ``function``'s flat keywords into a PruneSpec (unless ``spec`` is given: then selection keywords
    are an error, so nothing is silently ignored) and {"calibration", "latency", "run"} option objects."""
    table = _FILE_KEYWORDS if file_level else _MODEL_KEYWORDS
    unknown = sorted(set(keywords) - set(table) - _SPEC_FIELDS)
    if unknown:
        raise TypeError(f"{function}() got unexpected keyword argument(s) {', '.join(unknown)}")
    selection = {k: v for k, v in keywords.items() if k in _SPEC_FIELDS}
    if spec is not None and selection:
        raise TypeError(f"{function}(): give either spec= or the selection keywords, not both "
                        f"(found {', '.join(sorted(selection))} beside spec)")
    if spec is None and build_spec:
        spec = spec_from_arguments(**selection)
    fields: dict = {name: {} for name in _OBJECTS}
    for key, value in keywords.items():
        if key in table:
            obj, field = table[key]
            fields[obj][field] = value
    return spec, {name: cls(**fields[name]) for name, cls in _OBJECTS.items()}
