"""prune_model: trace -> plan -> compensate -> surgery -> verify, in one call."""
from __future__ import annotations

import copy
import dataclasses
import math
import time

import torch
from torch import nn

from ..eval.profile import profile
from ..graph import trace
from ..layers import layer_widths  # also imported from here by callers
from .compensate import compensation_constants, fold_constants
from .importance import get_criterion
from .latency import LatencyModel, OrtMeasurer, plan_for_latency
from .plan import PlanError, agp_schedule, make_plan, removed_per_layer, resolve_names
from .options import Calibration, LatencySetup, PassOptions, sort_keywords
from .reconstruct import reconstruct
from .spec import SEARCHED_MACS_EXPONENTS, PruneSpec
from .surgery import apply_plan


def _outputs(model, x):
    model.eval()
    with torch.no_grad():
        out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = torch.cat([v.flatten(1) for v in out.values() if isinstance(v, torch.Tensor)], 1)
    return out.float()


def output_difference(reference: torch.Tensor, other: torch.Tensor) -> dict:
    """Max absolute difference and max difference relative to the reference's largest magnitude."""
    diff = (reference - other).abs().max().item()
    scale = reference.abs().max().item()
    return {"max_abs_diff": diff, "max_rel_diff": diff / scale if scale > 0 else diff}


def prune_model(model: nn.Module, ratio: float | None = None, *, spec: PruneSpec | None = None, grad_fn=None,
                **keywords) -> dict:
    """Prune ``model`` in place (physically smaller layers) and return a report: ``prune`` with flat keywords.

    What to prune is ``spec``, else the PruneSpec of ``ratio`` and the selection keywords (threshold, target_macs,
    target_latency, criterion, round_to, min_keep, ignore, local, overrides, compensate). The other keywords go to
    ``options``' objects: ``calib`` (the images tensor), ``calib_positions``, ``recon_alpha`` (``Calibration``);
    ``backend``, ``threads``, ``latency_measurer``, ``latency_cache`` (``LatencySetup``); ``imgsz``,
    ``trace_size``, ``profile_size``, ``example``, ``seed``, ``verify``, ``progress`` (``PassOptions``).
    """
    if ratio is not None:
        keywords["ratio"] = ratio
    spec, objects = sort_keywords("prune_model", keywords, spec)
    return prune(model, spec, grad_fn=grad_fn, **objects)


def prune(model: nn.Module, spec: PruneSpec, *, grad_fn=None, calibration: Calibration | None = None,
          latency: LatencySetup | None = None, run: PassOptions | None = None) -> dict:
    """Prune ``model`` in place as ``spec`` says and return a report, which stores the spec and the plan itself
    (``plan``: removed positions per group and per layer).

    ``grad_fn(model)`` populates gradients for ``taylor`` (the caller builds it: ``train.taylor.taylor_grad_fn``).
    ``calibration.images`` is needed by ``compensate="reconstruct"`` (least-squares refit of the consumers) and
    ``criterion="recon"``; ``latency`` says where ``target_latency`` is measured (``round_to=None`` lets the
    planner choose the channel multiple for that runtime); ``run`` how the pass traces, profiles and verifies.
    """
    calibration, latency, run = calibration or Calibration(), latency or LatencySetup(), run or PassOptions()
    if spec.macs_exponent == "search":
        return _prune_with_chosen_exponent(model, spec, grad_fn, calibration, latency, run)
    t0 = time.perf_counter()
    crit = get_criterion(spec.criterion)
    calib = calibration.images
    needs_calib = _needs_calibration(spec, calib)
    ignored = _resolve_layer_names(model, spec)
    g = torch.Generator().manual_seed(run.seed)
    ref_param = next(model.parameters())
    example = (torch.rand(1, 3, run.trace_size, run.trace_size, generator=g) if run.example is None
               else run.example).to(ref_param.device, ref_param.dtype)
    prof_size = run.profile_size or run.imgsz
    before = profile(model, prof_size)
    widths_before = layer_widths(model)
    reference = copy.deepcopy(model) if run.verify or needs_calib else None

    t_graph = time.perf_counter()
    graph = trace(model, example=example, ignore=ignored)
    t_plan = time.perf_counter()
    plan, latency_report = _plan(model, graph, spec, grad_fn, calib, calibration.positions, run.seed,
                                 dict(backend=latency.backend, threads=latency.threads, measurer=latency.measurer,
                                      cache=latency.cache, imgsz=prof_size))
    plan_record = {"groups": {str(gid): pos for gid, pos in plan.remove.items()},
                   "layers": removed_per_layer(graph, plan)}
    t_surgery = time.perf_counter()
    _compensate_and_cut(model, graph, plan, spec.compensate, example)
    t_recon = time.perf_counter()
    recon = None
    if spec.compensate == "reconstruct":
        recon = reconstruct(model, reference, graph, plan, calib, max_positions=calibration.positions,
                            alpha=calibration.alpha, seed=run.seed, progress=run.progress)
    t_done = time.perf_counter()
    if crit.needs_gradients:
        model.zero_grad(set_to_none=True)

    report = _report(spec, plan, graph, sorted(ignored), prof_size, before, profile(model, prof_size),
                     widths_before, layer_widths(model))
    report["seconds"] = {"graph": t_plan - t_graph, "plan": t_surgery - t_plan, "surgery": t_recon - t_surgery,
                         "reconstruct": t_done - t_recon, "total": t_done - t0}
    _add_outcome(report, spec, plan, plan_record, recon, latency_report)
    if run.verify:
        report["verification"] = _verification(reference, model, run.trace_size * 2, g)
    return report


def _prune_with_chosen_exponent(model, spec: PruneSpec, grad_fn, calibration: Calibration, latency, run) -> dict:
    """``macs_exponent="search"``: prune a copy once per candidate exponent, measure each copy's output gap to the
    original on the calibration images, then prune ``model`` with the nearest. The gap, not the layers' refit
    errors, decides: cutting cheap P5 channels leaves every refit small and the detections far off."""
    _needs_calibration(spec, calibration.images)
    if calibration.gap is None:
        raise PlanError("macs_exponent search compares candidate cuts by their output gap: pass calib_gap= "
                        "(yolo_prune.train.unlabeled.student_teacher_gap; the tools pass it)")
    images = calibration.images[:max(1, calibration.gap_images)]
    quiet = dataclasses.replace(run, verify=False, progress=False)
    trials, first_error = [], None
    for exponent in SEARCHED_MACS_EXPONENTS:
        trial = copy.deepcopy(model)
        try:
            prune(trial, dataclasses.replace(spec, macs_exponent=exponent), grad_fn=grad_fn,
                  calibration=calibration, latency=latency, run=quiet)
        except PlanError as e:  # e.g. a strong exponent empties the cheap layers' floors first: that one drops out
            first_error = first_error or e
            trials.append({"macs_exponent": exponent, "error": str(e)})
            continue
        trials.append({"macs_exponent": exponent, "gap": float(calibration.gap(trial, model, images))})
        if run.progress:
            print(f"macs_exponent {exponent:g}: output gap {trials[-1]['gap']:.4f}", flush=True)
    gapped = [t for t in trials if "gap" in t]
    if not gapped:
        raise first_error
    measured = [t for t in gapped if not math.isnan(t["gap"])]  # min() would keep a NaN that came first
    if not measured:
        raise PlanError("macs_exponent search: expected a numeric output gap for at least one candidate, found nan "
                        f"at every exponent measured ({', '.join(format(t['macs_exponent'], 'g') for t in gapped)})")
    best = min(measured, key=lambda t: t["gap"])["macs_exponent"]
    # the winner is pruned again on ``model`` itself (same seed, same cut): a pruned copy cannot be put in its
    # place without rebinding every reference the caller holds to the model's modules
    report = prune(model, dataclasses.replace(spec, macs_exponent=best), grad_fn=grad_fn, calibration=calibration,
                   latency=latency, run=run)
    report["macs_exponent"] = {"chosen": best, "gap_images": len(images), "trials": trials}
    return report


def _calibration_users(spec: PruneSpec) -> list[str]:
    """What in ``spec`` reads calibration images, first the one an error names."""
    uses = {"compensate reconstruct": spec.compensate == "reconstruct",
            f"criterion {spec.criterion}": get_criterion(spec.criterion).needs_calibration,
            "macs_exponent search": spec.macs_exponent == "search"}
    return [what for what, used in uses.items() if used]


def needs_calibration(spec: PruneSpec) -> bool:
    """Whether ``spec`` needs calibration images: reconstruct, a criterion on input statistics, or a
    ``macs_exponent`` chosen by the output gap."""
    return bool(_calibration_users(spec))


def _needs_calibration(spec: PruneSpec, calib) -> bool:
    """``needs_calibration``, and an error where the images are needed but missing."""
    users = _calibration_users(spec)
    if users and calib is None:
        raise PlanError(f"{users[0]} needs unlabeled calibration images: pass --calib DATA_YAML|IMAGE_DIR")
    return bool(users)


def _compensate_and_cut(model, graph, plan, compensate: str, example) -> None:
    """β compensation (unless off) folded into the consumers, then the surgery that removes the planned channels."""
    if compensate != "off":  # reconstruct starts from β compensation: it stays where a layer cannot be refit
        fold_constants(model, graph, compensation_constants(model, graph, plan, example),
                       mode="bias" if compensate == "reconstruct" else compensate)
    apply_plan(model, graph, plan)


def _add_outcome(report: dict, spec: PruneSpec, plan, plan_record: dict, recon, latency) -> None:
    """The plan, the reconstruction and latency reports (when there are), the removed importance."""
    report["plan"] = plan_record
    if recon is not None:
        report["reconstruction"] = _reconstruction_report(recon)
    if latency is not None:
        report["target_latency"] = spec.target_latency
        report["latency"] = latency
    report["removed_importance"] = plan.removed_importance


def _resolve_layer_names(model, spec: PruneSpec) -> set:
    """The layers ``spec.ignore`` names (unknown names are an error), and a check of the overrides' names."""
    names = [n for n, _ in model.named_modules() if n]
    ignored = resolve_names(spec.ignore, names, "--ignore")
    if spec.overrides:
        resolve_names([p for p, _ in spec.overrides], names, "--config")
    return ignored


def _verification(reference, model, size: int, generator) -> dict:
    """Pruned vs unpruned outputs on one random input."""
    ref_param = next(model.parameters())
    x = torch.rand(1, 3, size, size, generator=generator).to(ref_param.device, ref_param.dtype)
    return {"input": list(x.shape), **output_difference(_outputs(reference, x), _outputs(model, x))}


def _report(spec: PruneSpec, plan, graph, ignored: list, imgsz: int, before: dict, after: dict, widths_before: dict,
            widths_after: dict) -> dict:
    return {
        "criterion": spec.criterion, "ratio": spec.ratio, "local": spec.local, "threshold": spec.threshold,
        "target_macs": spec.target_macs, "round_to": plan.round_to, "min_keep": spec.min_keep,
        "compensate": spec.compensate, "ignore": ignored, "imgsz": imgsz, "groups": len(graph.groups),
        "prunable_channels": sum(gr.width for gr in graph.groups), "removed_channels": plan.removed_channels,
        "macs_before": before["macs"], "macs_after": after["macs"], "params_before": before["params"],
        "params_after": after["params"], "macs_ratio": after["macs"] / before["macs"],
        "widths_before": widths_before, "widths_after": widths_after,
        "not_run_layers": graph.not_run, "fixed_reasons": graph.fixed_reasons, "spec": spec.to_dict()}


def _plan(model, graph, spec: PruneSpec, grad_fn, calib, calib_positions: int, seed: int, latency_args: dict):
    """The plan (and the latency report with target_latency): gradients or statistics first if the criterion
    needs them."""
    crit = get_criterion(spec.criterion)
    if crit.needs_gradients:
        if grad_fn is None:
            raise PlanError("criterion taylor needs gradients: pass --data (labelled batches) or --calib "
                            "(pseudo-labels); library callers pass grad_fn")
        model.zero_grad(set_to_none=True)
        grad_fn(model)
    stats = None
    if crit.needs_calibration:
        stats = crit.statistics(model, graph, calib, calib_positions, seed)
    latency = None
    if spec.target_latency is not None:
        plan, latency = _plan_latency(model, graph, spec.target_latency, spec.round_to, **latency_args,
                                      criterion=spec.criterion, min_keep=spec.min_keep, overrides=spec.overrides,
                                      macs_exponent=spec.macs_exponent, seed=seed, stats=stats)
    else:
        plan = make_plan(graph, spec, seed=seed, stats=stats)
    if plan.removed_channels == 0:
        raise PlanError("the plan removes no channel (ratio/threshold too small for the width constraints "
                        f"round_to={plan.round_to}, min_keep={spec.min_keep:.0%})")
    return plan, latency


def _reconstruction_report(recon: dict) -> dict:
    fitted = {k: v for k, v in recon["layers"].items() if "rel_err_after" in v}
    return {
        "images": recon["images"], "positions_per_layer": recon["positions"], "alpha": recon["alpha"],
        "refit_layers": len(fitted), "fallback_layers": recon["fallback"],
        "bn_restandardized": recon["bn_restandardized"],
        "unchanged_layers": sorted(k for k, v in recon["layers"].items() if "skipped" in v),
        "rel_err_before_mean": float(sum(v["rel_err_before"] for v in fitted.values()) / max(len(fitted), 1)),
        "rel_err_after_mean": float(sum(v["rel_err_after"] for v in fitted.values()) / max(len(fitted), 1)),
        "per_layer": fitted}


def check_latency_selection(target_latency, ratio=None, threshold=None, target_macs=None, round_to=None) -> None:
    """Validate a latency-targeted selection (``PruneSpec``'s bounds)."""
    PruneSpec(ratio=ratio, threshold=threshold, target_macs=target_macs, target_latency=target_latency,
              round_to=round_to)


def _plan_latency(model, graph, target, round_to, backend, threads, measurer, cache, imgsz, **plan_kwargs):
    """The latency-targeted plan plus its report: candidates per round_to, probes, predicted ratio."""
    if measurer is None:
        measurer = OrtMeasurer(backend, imgsz=imgsz, threads=threads)
    lat = LatencyModel(model, graph, measurer, cache_dir=cache)
    plan, tried = plan_for_latency(graph, target, lat, round_to=round_to, **plan_kwargs)
    env = measurer.environment()
    return plan, {"backend": env.get("backend", backend), "threads": env.get("threads", threads),
                  "imgsz": env.get("imgsz", imgsz), "round_to": plan.round_to, "candidates": tried,
                  "predicted_ratio": plan.cost_ratio_estimate, "macs_ratio_estimate": plan.macs_ratio_estimate,
                  "probes": len(lat.probes), "measured_probes": sum(not p["cached"] for p in lat.probes),
                  "cache": str(lat.cache_file)}


def prune_iteratively(model: nn.Module, ratio: float, steps: int, between_steps=None, **kwargs) -> list[dict]:
    """Prune toward ``ratio`` of the ORIGINAL prunable channels in ``steps`` AGP steps.

    ``between_steps(model, step, report)`` runs after each step (e.g. a fine-tuning epoch).
    """
    total = sum(gr.width for gr in trace(model, imgsz=kwargs.get("trace_size", 64)).groups)
    reports = []
    for step, cumulative in enumerate(agp_schedule(ratio, steps)):
        remaining = sum(gr.width for gr in trace(model, imgsz=kwargs.get("trace_size", 64)).groups)
        removed_so_far = total - remaining
        step_ratio = max(0.0, (cumulative * total - removed_so_far) / max(remaining, 1))
        if step_ratio <= 0:
            continue
        rep = prune_model(model, min(step_ratio, 0.99), **kwargs)
        rep["step"], rep["cumulative_target"] = step + 1, cumulative
        reports.append(rep)
        if between_steps is not None:
            between_steps(model, step + 1, rep)
    return reports
