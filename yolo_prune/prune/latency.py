"""Latency as the planner's target: measured on the runtime the model will run on, not guessed from MACs.

``LatencyModel`` is a cost model for ``make_plan`` (the ``target_macs`` mechanism with another cost): the cost of
a candidate plan is the measured latency of the model pruned by it, as a fraction of the unpruned model's, both
timed round-robin in the same session (``yolo_prune.runtime.runners.interleaved_times``) so the load of a
shared machine cancels out of the ratio. The planner's binary search along its global importance ranking thus
measures whole candidate models (about 12 per search), so everything latency does not share with MACs (the head
and decode, memory-bound activations, the CPU's channel blocking) is in the numbers.

Each measured ratio is cached on disk (``cache_dir``/<key>.json, the key hashing the unpruned layer widths,
backend, input size, batch, threads, CPU and library versions; entries keyed by the candidate's widths), so a
re-run or another criterion with the same widths costs nothing.

``plan_for_latency`` decides the channel multiple per runtime: it plans at every candidate ``round_to`` of the
backend (``ROUND_TO_CANDIDATES``) and keeps the plan that meets the target with the least importance removed.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import statistics
import tempfile
from pathlib import Path

from torch import nn

from ..runtime import backend_names, get_backend
from ..runtime.host import cpu_model
from ..runtime.ort import session_runner
from ..runtime.runners import BackendUnavailable, interleaved_times, ort_session, torch_runner
from .plan import PlanError, PruningPlan, make_plan
# onnxruntime is imported inside the functions that use it (heavy, not needed to import yolo_prune)

# the runtime registry's (yolo_prune/runtime/backends.py), onnxruntime first: the CLI's order
LATENCY_BACKENDS = tuple(sorted(backend_names(latency=True), key=lambda n: get_backend(n).engine != "ort"))
# channel multiples worth trying per runtime (Backend.round_to: NCHWc blocks on CPUs, tensor-core tiles on GPUs)
ROUND_TO_CANDIDATES = {name: get_backend(name).round_to for name in LATENCY_BACKENDS}
TOLERANCE = 0.05  # the issue's +-5 %: a plan within this of the target counts as meeting it


def default_cache_dir() -> Path:
    return Path(os.environ.get("YOLO_PRUNE_CACHE") or Path.home() / ".cache" / "yolo_prune") / "latency"


def widths_key(model: nn.Module) -> str:
    """A digest of every conv/linear/BN width: two models with equal widths have the same latency."""
    from ..layers import layer_widths

    return hashlib.sha1(json.dumps(layer_widths(model), sort_keys=True).encode()).hexdigest()[:16]


class OrtMeasurer:
    """Median latency of a reference and a candidate model, timed round-robin on one backend.

    ``measure(reference, candidate) -> (reference_ms, candidate_ms)``; PyTorch models are exported to ONNX for the
    ``ort-*`` backends (the reference once) and BN-folded for ``torch``.
    """

    def __init__(self, backend: str = "ort-cpu", imgsz: int = 640, threads: int | None = 1, batch: int = 1,
                 runs: int = 15, warmup: int = 3):
        if backend not in LATENCY_BACKENDS:
            raise PlanError(f"--backend: expected one of {', '.join(LATENCY_BACKENDS)}, found {backend!r}")
        if runs < 3:
            raise PlanError(f"latency runs: expected >= 3 (a median), found {runs}")
        self.backend, self.imgsz, self.threads, self.batch = backend, int(imgsz), threads, int(batch)
        self.runs, self.warmup = runs, warmup
        self._tmp = tempfile.TemporaryDirectory(prefix="yolo_prune_latency_")
        self._ref_runner = None
        self._ref_id = None
        self._n = 0

    def environment(self) -> dict:
        import onnxruntime as ort
        import torch

        return {"backend": self.backend, "imgsz": self.imgsz, "threads": self.threads, "batch": self.batch,
                "cpu": cpu_model(), "onnxruntime": ort.__version__, "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}

    def _runner(self, model: nn.Module):
        hw = (self.imgsz, self.imgsz)
        if self.backend == "torch":
            import torch

            from ..eval.infer import prepare_model

            device = "cuda" if torch.cuda.is_available() else "cpu"
            return torch_runner(prepare_model(copy.deepcopy(model), device, fuse=True), hw, self.batch, device)
        from ..export.onnx import export_onnx

        self._n += 1
        path = Path(self._tmp.name) / f"m{self._n}.onnx"
        export_onnx(model, path, imgsz=self.imgsz, batch=self.batch, verbose=False)
        try:
            session = ort_session(path, self.backend, self.threads, trt_fp16=True)
        except BackendUnavailable as e:
            raise PlanError(f"--backend {self.backend}: {e}") from None
        return session_runner(session, hw, self.batch)

    def measure(self, reference: nn.Module, candidate: nn.Module) -> tuple[float, float]:
        import torch

        if self._ref_id != id(reference):
            self._ref_runner, self._ref_id = self._runner(reference), id(reference)
        saved = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            times = interleaved_times([self._ref_runner, self._runner(candidate)], self.runs, self.warmup,
                                      desc="latency")
        finally:
            torch.set_num_threads(saved)
        return statistics.median(times[0]) * 1000.0, statistics.median(times[1]) * 1000.0


class LatencyModel:
    """Cost model for ``make_plan``: latency of the model pruned by a plan / latency of the unpruned model.

    ``measurer`` has ``measure(reference, candidate) -> (ms, ms)`` and ``environment() -> dict`` (mock it in
    tests). ``cost(counts, remove)`` builds the candidate (a pruned copy), looks its widths up in the cache and
    measures only on a miss. ``probes`` records every evaluated candidate.
    """

    def __init__(self, model: nn.Module, graph, measurer, cache_dir=None):
        self.model, self.graph, self.measurer = model, graph, measurer
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        env = measurer.environment()
        self.key = hashlib.sha1(json.dumps({"widths": widths_key(model), **env}, sort_keys=True,
                                           default=str).encode()).hexdigest()[:20]
        self.cache_file = self.cache_dir / f"{self.key}.json"
        self.cache = self._load()
        self.probes: list[dict] = []

    def _load(self) -> dict:
        if not self.cache_file.is_file():
            return {}
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # a damaged cache is only a lost speed-up: measure again
        if not isinstance(data, dict):
            return {}
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and 0 < float(v) < 100}

    def _save(self) -> None:
        from ..io import atomic_write_text

        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.cache_file, json.dumps(self.cache, indent=1, sort_keys=True))
        except OSError:
            pass  # read-only home: caching is optional

    def candidate(self, remove: dict) -> nn.Module:
        from .surgery import apply_plan

        cand = copy.deepcopy(self.model)
        apply_plan(cand, self.graph, PruningPlan(remove=remove))
        return cand

    def cost(self, counts: dict, remove: dict) -> float:
        if not any(remove.values()):
            return 1.0
        cand = self.candidate(remove)
        key = widths_key(cand)
        cached = key in self.cache
        if not cached:
            ref_ms, cand_ms = self.measurer.measure(self.model, cand)
            self.cache[key] = cand_ms / ref_ms
            self._save()
        ratio = self.cache[key]
        self.probes.append({"removed": sum(len(v) for v in remove.values()), "ratio": ratio, "cached": cached})
        return ratio


def plan_for_latency(graph, target: float, latency_model: LatencyModel, round_to=None, **plan_kwargs):
    """The plan meeting ``target`` (fraction of the unpruned latency) with the least importance removed, over the
    channel multiples ``round_to`` (one int, or None for the backend's ``ROUND_TO_CANDIDATES``).

    Returns (plan, [per candidate round_to: {round_to, predicted_ratio, removed_importance, macs_ratio} or
    {round_to, error}]).
    """
    backend = getattr(latency_model.measurer, "backend", "ort-cpu")
    choices = (round_to,) if isinstance(round_to, int) else tuple(round_to or ROUND_TO_CANDIDATES.get(backend, (8,)))
    tried, best, best_plan = [], None, None
    for r in choices:
        try:
            plan = make_plan(graph, target_macs=target, round_to=r, cost_model=latency_model, **plan_kwargs)
        except PlanError as e:
            tried.append({"round_to": r, "error": str(e)})
            continue
        row = {"round_to": r, "predicted_ratio": plan.cost_ratio_estimate,
               "removed_importance": plan.removed_importance, "macs_ratio": plan.macs_ratio_estimate}
        tried.append(row)
        meets = plan.cost_ratio_estimate <= target * (1 + TOLERANCE)
        rank = (not meets, plan.removed_importance, abs(plan.cost_ratio_estimate - target))
        if best is None or rank < best:
            best, best_plan = rank, plan
    if best_plan is None:
        raise PlanError(f"target latency {target}: no plan at round_to {list(choices)}: "
                        + "; ".join(t["error"] for t in tried))
    return best_plan, tried
