"""``PruneSpec``: what to prune, validated once with one set of bounds.

``make_plan``, ``prune_model``, ``prune_checkpoint``, targeted sparsity (``train.sparsity``/``train.config``) and
the pipeline's value check all build or take a PruneSpec, so a value is accepted or refused the same way
everywhere. The prune report stores it (``to_dict``) next to the plan itself.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .compensate import MODES
from .importance import get_criterion

TARGETS = ("ratio", "threshold", "target_macs", "target_latency")
# macs_exponent="search" tries these: on yolov5n (coco128, reconstruct) the best lay at 0.05-0.1, 0.25 already lost
SEARCHED_MACS_EXPONENTS = (0.0, 0.05, 0.1, 0.15)
DEFAULT_ROUND_TO = 8


class PlanError(ValueError):
    """The requested pruning cannot be planned (bad ratio, unreachable target, nothing prunable...)."""


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PlanError(f"{name}: expected a finite number, found {value!r}")
    return float(value)


def default_macs_exponent(target: str, compensate: str) -> float | str:
    """What the tools use when no exponent is given: a search for a least-squares cut to a MACs or latency target
    (yolov5n coco128 at 320, no training: 0.205/0.162/0.104 -> 0.239/0.187/0.109 at 0.9/0.8/0.7x MACs,
    docs/BENCHMARKS.md), else 0 (the search needs calibration images and costs one prune per candidate)."""
    return "search" if compensate == "reconstruct" and target in ("target_macs", "target_latency") else 0.0


@dataclass(frozen=True)
class PruneSpec:
    """Exactly one target: ``ratio`` (fraction of prunable channels, 0 < r < 1; global unless ``local``),
    ``threshold`` (remove channels scoring below it), ``target_macs`` (0 < F <= 1 of the original MACs) or
    ``target_latency`` (0 < F <= 1 of the measured latency). ``round_to``: kept widths are multiples of it (None:
    8, or chosen by the latency planner). ``min_keep``: fraction of every group that stays (0..1). ``ignore``:
    layer names/globs never pruned. ``overrides``: ((glob, local ratio or None = exclude), ...). ``criterion``: a
    name in the criterion registry; ``compensate``: one of ``compensate.MODES``. ``macs_exponent`` (-1..2, MACs and
    latency targets): the global ranking divides each channel's (group-relative) importance by the MACs its removal
    saves to this power, relative to the average channel: 0 ranks by importance alone, 1 by importance per MAC,
    a negative one protects the layers whose channels cost most;
    "search" prunes once per ``SEARCHED_MACS_EXPONENTS`` value and keeps the one whose outputs on the calibration images
    stay nearest the original's."""
    ratio: float | None = None
    threshold: float | None = None
    target_macs: float | None = None
    target_latency: float | None = None
    criterion: str = "bn"
    round_to: int | None = None
    min_keep: float = 0.1
    ignore: tuple = ()
    local: bool = False
    overrides: tuple | None = None
    compensate: str = "bias"
    macs_exponent: float | str = 0.0

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise the containers once
        set_(self, "ignore", tuple(self.ignore or ()))
        set_(self, "overrides", None if not self.overrides else tuple((str(p), r) for p, r in self.overrides))
        self._check_target()
        if self.round_to is not None and (isinstance(self.round_to, bool) or not isinstance(self.round_to, int)
                                          or self.round_to < 1):
            raise PlanError(f"round_to: expected an integer >= 1, found {self.round_to!r}")
        if not 0 <= _number("min_keep", self.min_keep) <= 1:
            raise PlanError(f"min_keep: expected 0 <= fraction <= 1, found {self.min_keep}")
        for pat, r in self.overrides or ():
            if r is not None and not 0 <= _number(f"overrides['{pat}']", r) < 1:
                raise PlanError(f"overrides['{pat}']: expected a ratio in [0, 1) or None (exclude), found {r!r}")
        self._check_macs_exponent()
        get_criterion(self.criterion)
        if self.compensate not in MODES:
            raise PlanError(f"compensate: expected one of {', '.join(MODES)}, found {self.compensate!r}")

    def _check_macs_exponent(self) -> None:
        if self.macs_exponent == "search":
            pass
        elif isinstance(self.macs_exponent, str) or not -1 <= _number("macs_exponent", self.macs_exponent) <= 2:
            raise PlanError(f"macs_exponent: expected -1 <= exponent <= 2 or 'search', found {self.macs_exponent!r}")
        if self.macs_exponent and self.target_macs is None and self.target_latency is None:
            raise PlanError(f"macs_exponent {self.macs_exponent}: weighs channels by the MACs they save, so it needs "
                            f"target_macs or target_latency (found {self.target})")

    def _check_target(self) -> None:
        chosen = [k for k in TARGETS if getattr(self, k) is not None]
        if len(chosen) != 1:
            if self.target_latency is not None:
                raise PlanError("give exactly one of ratio, threshold, target_macs or target_latency")
            raise PlanError("give exactly one of ratio, threshold or target_macs")
        value = _number(chosen[0], getattr(self, chosen[0]))
        if chosen[0] == "ratio" and not 0 < value < 1:
            raise PlanError(f"ratio: expected 0 < ratio < 1, found {value}")
        if chosen[0] == "target_macs" and not 0 < value <= 1:
            raise PlanError(f"target_macs: expected 0 < F <= 1 (a fraction of the original MACs), found {value}")
        if chosen[0] == "target_latency" and not 0 < value <= 1:
            raise PlanError(f"target_latency: expected 0 < F <= 1 (a fraction of the unpruned model's measured "
                            f"latency), found {value}")

    @property
    def target(self) -> str:
        """Which target was given: ratio, threshold, target_macs or target_latency."""
        return next(k for k in TARGETS if getattr(self, k) is not None)

    @property
    def plan_round_to(self) -> int:
        return DEFAULT_ROUND_TO if self.round_to is None else self.round_to

    def to_dict(self) -> dict:
        """Plain data (json): what the prune report stores."""
        d = asdict(self)
        d["ignore"] = list(self.ignore)
        d["overrides"] = None if self.overrides is None else [list(o) for o in self.overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PruneSpec":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
