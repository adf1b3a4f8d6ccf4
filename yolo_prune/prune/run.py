"""prune_checkpoint: load a model file, prune it, and write P.pt + P.json (and family-native copies)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ..io import atomic_write_json
from ..models import load
from ..models.checkpoint import compose_plans, save
from ..models.native import write_native
from ..versions import versions
from .api import needs_calibration, prune
from .importance import get_criterion
from .options import Calibration, LatencySetup, PassOptions, sort_keywords
from .plan import PlanError
from .spec import PruneSpec
from .unstructured import prune_unstructured


def read_prune_config(path) -> list:
    """``--config prune.yaml``: {layers: {glob: ratio | exclude}} -> [(glob, ratio or None)] (NNI config_list)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: prune config not found (expected a yaml with a 'layers' mapping)")
    doc = yaml.safe_load(p.read_text()) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), dict):
        raise PlanError(f"{p}: field 'layers' expected a mapping of layer-name globs to a ratio or 'exclude', "
                        f"found {type(doc.get('layers') if isinstance(doc, dict) else doc).__name__}")
    unknown = set(doc) - {"layers"}
    if unknown:
        raise PlanError(f"{p}: unknown field(s) {sorted(unknown)}; only 'layers' is read")
    out = []
    for pat, val in doc["layers"].items():
        if val in ("exclude", None, False):
            out.append((str(pat), None))
        elif isinstance(val, (int, float)) and 0 <= val < 1:
            out.append((str(pat), float(val)))
        else:
            raise PlanError(f"{p}: layers['{pat}'] expected a ratio in [0, 1) or 'exclude', found {val!r}")
    return out


def summary_table(report: dict) -> str:
    """A short text table of the result."""
    rows = [("MACs", f"{report['macs_before'] / 1e9:.3f} G", f"{report['macs_after'] / 1e9:.3f} G",
             f"{report['macs_after'] / report['macs_before']:.3f}x"),
            ("params", f"{report['params_before'] / 1e6:.3f} M", f"{report['params_after'] / 1e6:.3f} M",
             f"{report['params_after'] / report['params_before']:.3f}x")]
    if "removed_channels" in report:
        rows.append(("channels removed", "", f"{report['removed_channels']}/{report['prunable_channels']}",
                     f"{report['removed_channels'] / max(report['prunable_channels'], 1):.1%}"))
    out = [f"{'':18} {'before':>12} {'after':>14} {'ratio':>8}"]
    out += [f"{a:18} {b:>12} {c:>14} {d:>8}" for a, b, c, d in rows]
    if "verification" in report:
        v = report["verification"]
        out.append(f"verification: max abs diff {v['max_abs_diff']:.3g}, max rel diff {v['max_rel_diff']:.3g} "
                   f"(vs unpruned, random input {v['input']})")
    if "seconds" in report:
        s = report["seconds"]
        out.append(f"time: graph {s['graph']:.3f}s, plan {s['plan']:.3f}s, surgery {s['surgery']:.3f}s"
                   + (f", reconstruct {s['reconstruct']:.1f}s" if s.get("reconstruct") else ""))
    return "\n".join(out)


def _show_groups(det, ignore, trace_size: int) -> None:
    from ..graph import trace
    from .plan import resolve_names
    names = [n for n, _ in det.named_modules() if n]
    graph = trace(det, imgsz=trace_size, ignore=resolve_names(ignore, names))
    print(graph)
    if graph.not_run:
        print(f"layers that never ran in the trace (left untouched): {', '.join(graph.not_run)}")


def _prune_unstructured(det, amount, imgsz: int) -> dict:
    if amount is None:
        raise PlanError("--mode unstructured needs --amount (fraction of weights to zero)")
    from ..eval.profile import profile
    before = profile(det, imgsz)
    report = prune_unstructured(det, amount)
    report.update(macs_before=before["macs"], macs_after=profile(det, imgsz)["macs"],
                  params_before=before["params"], params_after=before["params"])
    return report


def _prune_structured(det, spec: PruneSpec, grad_fn, calibration: Calibration, latency: LatencySetup,
                      run: PassOptions) -> dict:
    if get_criterion(spec.criterion).needs_gradients and grad_fn is None:
        raise PlanError("--criterion taylor needs gradients: --data D.yaml (a few labelled batches) or --calib "
                        "IMAGES (unlabeled: pseudo-labels from the model itself); library callers pass "
                        "grad_fn=yolo_prune.train.taylor.grad_fn_for(...)")
    if calibration.source is not None and needs_calibration(spec):  # without a source, prune() says what is missing
        from ..eval.infer import model_stride
        from .reconstruct import calibration_batch
        images = calibration_batch(calibration.source, calibration.count, calibration.imgsz, model_stride(det))
        calibration = dataclasses.replace(calibration, images=images)
    return prune(det, spec, grad_fn=grad_fn, calibration=calibration, latency=latency, run=run)


def _metadata(weights, mode: str, spec: PruneSpec | None, report: dict, amount, imgsz: int,
              calibration: Calibration, grad_fn) -> dict:
    """The checkpoint's ``meta``: where it came from, what was asked (the spec's target), and the outcome."""
    target = {k: getattr(spec, k, None) for k in ("criterion", "ratio", "threshold", "target_macs", "target_latency")}
    return {"source": str(weights), "mode": mode, **target,
            "round_to": report.get("round_to", getattr(spec, "round_to", None)), "amount": amount,
            "compensate": report.get("compensate"), "imgsz": imgsz, "calib": calibration.describe(),
            "gradients": getattr(grad_fn, "info", None)
            if spec is not None and get_criterion(spec.criterion).needs_gradients else None,
            "macs_before": report["macs_before"], "macs_after": report["macs_after"],
            "params_before": report["params_before"], "params_after": report["params_after"],
            "versions": versions()}


def prune_checkpoint(weights, out, *, spec: PruneSpec | None = None, mode: str = "structured", amount=None,
                     config=None, show_groups: bool = False, device: str = "cpu", grad_fn=None, **keywords) -> dict:
    """``prune_file`` with flat keywords: the selection ones (ratio, threshold, target_macs, target_latency,
    criterion, round_to, min_keep, ignore, local, compensate) make the PruneSpec unless ``spec`` is given;
    ``calib`` (a data yaml or image folder), ``calib_images``, ``calib_imgsz`` make the ``Calibration``;
    ``backend``, ``threads``, ``latency_cache`` the ``LatencySetup``; ``imgsz``, ``trace_size``, ``seed`` the
    ``PassOptions`` (``options.sort_keywords``)."""
    spec, objects = sort_keywords("prune_checkpoint", keywords, spec, file_level=True,
                                  build_spec=mode == "structured")
    return prune_file(weights, out, spec, mode=mode, amount=amount, config=config, show_groups=show_groups,
                      device=device, grad_fn=grad_fn, **objects)


def prune_file(weights, out, spec: PruneSpec | None, *, mode: str = "structured", amount=None, config=None,
               show_groups: bool = False, device: str = "cpu", grad_fn=None, calibration: Calibration | None = None,
               latency: LatencySetup | None = None, run: PassOptions | None = None) -> dict:
    """Load ``weights``, prune, and write ``out`` (.pt) plus ``out`` .json. Nothing is written on error.

    Structured mode prunes as ``spec`` says (``config``'s per-layer overrides are added to it); unstructured mode
    zeroes ``amount`` of the weights. ``calibration.source`` (data yaml: its train split, or an image folder /
    list / file; no labels are read): unlabeled images for ``compensate="reconstruct"`` and ``criterion="recon"``.
    ``grad_fn(model)``: populates the gradients of ``criterion="taylor"``; the caller builds it (for a data yaml:
    ``yolo_prune.train.taylor.taylor_grad_fn(data)``, as tools/prune.py does from ``--data``).
    Each family's native format goes beside it (``yolo_prune.models.native.write_native``): ultralytics models get
    ``<out>.ultralytics.pt`` (opens with ``ultralytics.YOLO``), darknet models ``<out>.cfg`` + ``<out>.weights``,
    legacy yolov5 models ``<out>.yolov5.pt`` (the yolov5 repo's val.py / detect.py / export.py open it).
    """
    calibration, latency, run = calibration or Calibration(), latency or LatencySetup(), run or PassOptions()
    out = Path(out)
    if out.suffix != ".pt":
        raise PlanError(f"--out: expected a .pt path, found {out}")
    if mode not in ("structured", "unstructured"):
        raise PlanError(f"--mode: expected structured or unstructured, found {mode!r}")
    if mode == "structured" and spec is None:
        raise PlanError("structured pruning needs a PruneSpec (what to prune)")
    det = load(weights, device=device)
    if config and spec is not None:
        spec = dataclasses.replace(spec, overrides=read_prune_config(config))
    elif config:
        read_prune_config(config)  # checked even where unstructured mode does not use it
    if show_groups:
        _show_groups(det, spec.ignore if spec is not None else (), run.trace_size)
    if mode == "unstructured":
        report = _prune_unstructured(det, amount, run.imgsz)
    else:
        report = _prune_structured(det, spec, grad_fn, calibration, latency, run)
        # in the unpruned model's positions (composed with an earlier cut's), so that the saved model can be
        # paired channel for channel with its teacher (train.features)
        det.prune_plan = compose_plans(det.prune_plan, report["plan"]["layers"], report["widths_before"])
    meta = _metadata(weights, mode, spec, report, amount, run.imgsz, calibration, grad_fn)
    report = {"weights": str(weights), "out": str(out), "family": det.family, **report, "meta": meta}
    out.parent.mkdir(parents=True, exist_ok=True)
    save(det, out, meta=meta)
    extra_files = []
    try:
        native = write_native(det, out)  # the family's own format beside P.pt (one helper for every stage)
        extra_files = native["files"]
        for key in set(native) - {"files", "notes"}:  # the family's entry (its name)
            report["ultralytics_pt" if key == "ultralytics" else key] = native[key]
        if native["notes"]:
            report["notes"] = native["notes"]
        atomic_write_json(out.with_suffix(".json"), report)
    except BaseException:
        for p in [out, *extra_files]:
            Path(p).unlink(missing_ok=True)
        raise
    return report

