"""Latency benchmark: every model x backend x batch, next to its MACs, with the ideal latency-proportional-to-MACs
line as the yardstick.

Backends:
  * ``torch``: PyTorch eval forward (BN folded into the convs, as onnxruntime does) on CUDA when torch sees a
    GPU, else the CPU (``torch-cpu`` / ``torch-cuda`` force one). CUDA timings synchronise before the clock is
    read.
  * ``ort-cpu``, ``ort-cuda``, ``ort-trt``: onnxruntime with that execution provider (TensorRT in fp16 unless
    ``trt_fp16=False``). A PyTorch model is exported once per batch size (static shapes) into ``out/onnx``.
    Timings are ``session.run`` on host numpy arrays, so GPU providers include the host<->device copies.
A backend that cannot run here (no GPU, provider not in this onnxruntime build, or onnxruntime fell back to
another provider) is skipped with a one-line reason: onnxruntime falls back silently, so the providers a session
really uses are checked and recorded.

Latency is per batch in ms (median, p90, min over ``runs`` timed calls after ``warmup``); MACs are per image.
The models of one backend x batch are timed round-robin, so on a shared machine every model sees the same load.
``macs_ratio`` and ``latency_ratio`` compare each row with the row of the largest-MACs model of the same
architecture (a pruned model and its unpruned parent share one), backend and batch; ``ratio_gap`` =
latency_ratio / macs_ratio is 1.0 when latency falls exactly as MACs do.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..eval import coco
from ..eval.infer import prepare_model
from ..eval.profile import profile
from ..io import atomic_write_text
from ..runtime import backend_names, get_backend
from ..runtime.host import cpu_model
from ..runtime.ort import OrtDetector, kernel_times, profiling_session, read_sidecar, session_runner
from ..runtime.runners import (BackendUnavailable, CaseSkipped, check_provider, interleaved_times, ort_session,
                               torch_device, torch_runner)
from ..versions import versions
from .onnx import _imgsz_hw, architecture_id, export_onnx
from .plots import plot_latency_vs_macs, plot_map_vs_latency
from .quantize import quantize_onnx
# onnxruntime is imported inside the functions that use it (heavy, not needed to import yolo_prune)

BACKENDS = backend_names()  # the runtime registry's (yolo_prune/runtime/backends.py)


# --------------------------------------------------------------------------------------------------- environment
def environment(threads: int | None) -> dict:
    import onnxruntime as ort

    env = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        **versions(("torch", "onnx", "onnxruntime", "yolo_prune")),
        "ort_available_providers": ort.get_available_providers(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    if hasattr(os, "getloadavg"):
        env["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return env


# --------------------------------------------------------------------------------------------------- timing
def _stats(times_s: list[float], batch: int) -> dict:
    ms = sorted(t * 1000.0 for t in times_s)
    med = statistics.median(ms)
    return {"latency_ms_median": med, "latency_ms_p90": float(np.percentile(ms, 90)), "latency_ms_min": ms[0],
            "images_per_s": batch * 1000.0 / med if med > 0 else float("inf"), "runs": len(ms)}


def ort_op_profile(path, imgsz: tuple[int, int], batch: int = 1, runs: int = 20, threads: int | None = 1) -> dict:
    """Milliseconds per call spent in each ONNX op type on onnxruntime's CPU provider (its own profiler).

    Shows where a pruned model's latency does not follow its MACs: ops whose cost scales with activations
    (SiLU, Concat, Add) shrink linearly with the channels kept while conv MACs shrink about quadratically;
    head/decode ops (DFL Softmax, Sigmoid, Transpose) do not shrink at all; layout reorders appear around convs
    whose widths are not multiples of the CPU's blocked layout (16 channels with AVX-512, 8 with AVX2).
    """
    session = profiling_session(path, threads)
    run = session_runner(session, imgsz, batch)
    for _ in range(runs):
        run()
    per_op: dict[str, float] = {}
    for _, op, ms in kernel_times(session):
        per_op[op] = per_op.get(op, 0.0) + ms / runs
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def op_profile_markdown(rows: list[dict]) -> str:
    """Per op type: the reference model's ms and each model's ms as a ratio of it (rows with ``op_ms``)."""
    lines = []
    by_model = {r["model"]: r for r in rows if r.get("op_ms")}
    for ref_name in dict.fromkeys(r.get("reference") for r in by_model.values()):
        ref = by_model.get(ref_name)
        if ref is None:
            continue
        group = [r for r in by_model.values() if r.get("reference") == ref_name]
        total = sum(ref["op_ms"].values())
        lines += [f"### per op type, vs {ref_name} (ms per call, ratio to {ref_name}; onnxruntime CPU profiler)", "",
                  "| op | " + " | ".join(r["model"] for r in group) + " | share of " + ref_name + " |",
                  "|---|" + "---|" * (len(group) + 1)]
        for op, ms in ref["op_ms"].items():
            cells = [f"{ms:.2f}" if r is ref else f"{r['op_ms'].get(op, 0.0) / ms:.2f}x" if ms else "-"
                     for r in group]
            lines.append(f"| {op} | " + " | ".join(cells) + f" | {ms / total:.1%} |")
        # ops the reference does not have (e.g. QLinearConv of an INT8 model): absolute ms per call
        extra = dict.fromkeys(op for r in group for op in r["op_ms"] if op not in ref["op_ms"])
        for op in sorted(extra, key=lambda o: -max(r["op_ms"].get(o, 0.0) for r in group)):
            cells = ["-" if op not in r["op_ms"] else f"{r['op_ms'][op]:.2f} ms" for r in group]
            lines.append(f"| {op} | " + " | ".join(cells) + " | - |")
        sums = [f"{total:.2f}" if r is ref else f"{sum(r['op_ms'].values()) / total:.2f}x" for r in group]
        lines += ["| all | " + " | ".join(sums) + " | 100% |", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- models
def _sidecar_stats(side: dict, path: Path) -> dict:
    """The sidecar fields the benchmark reports, checked (the sidecar travels with a downloaded .onnx): macs and
    params non-negative integers, imgsz [h, w] positive integers, architecture a short string."""
    def fail(key):
        raise ValueError(f"{path}.json: field '{key}' expected {want[key]}, found {side[key]!r}"[:300])

    want = {"macs": "a non-negative integer", "params": "a non-negative integer", "imgsz": "[height, width] (two "
            "positive integers)", "architecture": "a string of at most 200 characters"}
    count = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
    ok = {"macs": count, "params": count, "architecture": lambda v: isinstance(v, str) and len(v) <= 200,
          "imgsz": lambda v: isinstance(v, list) and len(v) == 2 and all(count(x) and x > 0 for x in v)}
    for key, check in ok.items():
        if side.get(key) is not None and not check(side[key]):
            fail(key)
    return side


class _Entry:
    """One model of the benchmark: a PyTorch Detector and/or an ONNX file, with its MACs/params per image."""

    def __init__(self, weights, label: str, imgsz: tuple[int, int]):
        in_memory = isinstance(weights, torch.nn.Module)
        self.weights = getattr(weights, "source", f"<in-memory {label}>") if in_memory else str(weights)
        self.label, self.imgsz = label, imgsz
        self.is_onnx = not in_memory and str(weights).lower().endswith(".onnx")
        self.detector = None
        self.onnx_files: dict[int, Path] = {}
        self.macs = self.params = None
        self.map50_95 = self.map50 = None
        self.architecture = f"?:{label}"
        if self.is_onnx:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: ONNX file not found")
            side = _sidecar_stats(read_sidecar(path), path)
            self.macs, self.params = side.get("macs"), side.get("params")
            self.architecture = side.get("architecture", self.architecture)
            if side.get("imgsz") and list(side["imgsz"]) != list(imgsz) and side.get("macs"):
                sh, sw = side["imgsz"]
                self.macs = int(side["macs"] * imgsz[0] * imgsz[1] / (sh * sw))  # MACs scale with pixels
        else:
            from yolo_prune.models import load

            self.detector = (weights if in_memory else load(weights)).eval()
            self.architecture = architecture_id(self.detector)
            prof = profile(self.detector, imgsz)
            self.macs, self.params = prof["macs"], prof["params"]

    def deployable(self, device: str):
        """A BN-folded eval copy on ``device`` (what onnxruntime runs too), made once per device."""
        cache = self.__dict__.setdefault("_deployable", {})
        if device not in cache:
            cache.clear()  # one device at a time keeps GPU memory free for the next backend
            cache[device] = prepare_model(self.detector, device, fuse=True)
        return cache[device]

    def onnx_for(self, batch: int, onnx_dir: Path, opset: int) -> Path:
        """The ONNX file to time at ``batch``: the given file, or a static export of the PyTorch model."""
        if self.is_onnx:
            return Path(self.weights)
        if batch not in self.onnx_files:
            path = onnx_dir / f"{self.label}_{self.imgsz[0]}x{self.imgsz[1]}_b{batch}.onnx"
            export_onnx(self.detector, path, imgsz=self.imgsz, batch=batch, opset=opset, verbose=False)
            self.onnx_files[batch] = path
        return self.onnx_files[batch]


def _labels(weights: list) -> list[str]:
    """Short unique names: the file stem, prefixed by its folder (or numbered) when two stems collide."""
    labels: list[str] = []
    for w in weights:
        if isinstance(w, torch.nn.Module):
            base, parent = str(getattr(w, "label", type(w).__name__)), ""
        else:
            p = Path(str(w))
            base, parent = (p.stem if p.suffix else p.name), p.parent.name
        label = base
        if label in labels and parent and f"{parent}_{base}" not in labels:
            label = f"{parent}_{base}"
        n = 2
        while label in labels:
            label, n = f"{base}_{n}", n + 1
        labels.append(label)
    return labels


# --------------------------------------------------------------------------------------------------- main entry
def run_benchmark(weights: list, imgsz=640, batches=(1,), runs: int = 100, warmup: int = 10,
                  backends=("torch", "ort-cpu"), threads: int | None = None, out=None, eval_kwargs: dict | None = None,
                  trt_fp16: bool = True, opset: int = 17, op_profile: bool = False, trt_int8: bool = False,
                  calib=None, calib_images: int = 32) -> list[dict]:
    """Time every model x backend x batch; write ``out/bench.md``, ``out/bench.json`` and PNG plots.

    ``weights``: checkpoints/yaml/cfg (anything ``yolo_prune.models.load`` reads), exported ``.onnx`` files
    and/or in-memory Detectors (labelled by their ``label`` attribute, else the class name).
    ``threads``: fixes torch's and onnxruntime's intra-op threads (None = library defaults; set it for
    reproducible CPU numbers). ``eval_kwargs``: when given, each model's mAP is measured once with
    ``yolo_prune.eval.coco.evaluate(model, **eval_kwargs)`` (the ONNX file through ``OrtDetector``).
    ``op_profile``: also profile every ``ort-cpu`` model per ONNX op type (``op_ms`` in the rows, ``ops.md``).
    ``trt_int8``: run ``ort-trt`` in INT8 instead: each fp32 ONNX is quantized to symmetric QDQ
    (``quantize.quantize_onnx(target="trt")``, calibrated on ``calib_images`` images of ``calib``; the decode stays
    fp32) and TensorRT builds its explicit-precision engine from it.
    Returns the rows (one dict per model x backend x batch; skipped ones carry ``status="skipped"`` and
    ``reason``).
    """
    if not weights:
        raise ValueError("--weights: expected at least one model, found none")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"--backends: unknown {unknown}; expected some of {', '.join(BACKENDS)}")
    if trt_int8 and calib is None:
        raise ValueError("--trt-int8 needs --calib DATA_OR_DIR (images to calibrate the int8 ranges)")
    if runs < 1 or warmup < 0:
        raise ValueError(f"--runs must be >= 1 and --warmup >= 0, found runs={runs}, warmup={warmup}")
    hw = _imgsz_hw(imgsz)
    out_dir = Path(out) if out is not None else Path("runs/benchmark")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_dir = out_dir / "onnx"

    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    env = environment(threads)
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    reported: set[tuple[str, str]] = set()
    try:
        entries = [_Entry(w, label, hw) for w, label in zip(weights, _labels(weights))]
        if eval_kwargs:
            _evaluate_all(entries, eval_kwargs, threads)
        for backend in backends:
            for batch in batches:
                case_rows, case_entries, runners = _prepare_case(
                    entries, backend, batch, hw, rows, skipped, reported, onnx_dir, opset, threads, trt_fp16,
                    (calib, calib_images) if trt_int8 else None)
                if runners:
                    times = interleaved_times(runners, runs, warmup, desc=f"{backend} b{batch}")
                    for row, t in zip(case_rows, times):
                        row.update(_stats(t, batch))
                    if op_profile and backend == "ort-cpu":
                        for row, entry in zip(case_rows, case_entries):
                            row["op_ms"] = ort_op_profile(entry.onnx_for(batch, onnx_dir, opset), hw, batch,
                                                          runs=max(5, min(runs, 20)), threads=threads)
                del runners  # frees sessions / GPU copies before the next backend
    finally:
        torch.set_num_threads(saved_threads)
    if hasattr(os, "getloadavg"):
        env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    add_ratios(rows)
    env["runs"], env["warmup"], env["trt_fp16"], env["trt_int8"] = runs, warmup, trt_fp16, trt_int8

    _write_outputs(rows, env, out_dir)
    return rows


def _prepare_case(entries, backend: str, batch: int, hw, rows: list, skipped: dict, reported: set, onnx_dir,
                  opset: int, threads, trt_fp16: bool, int8) -> tuple:
    """One row per model for this backend x batch (appended to ``rows``); the runners of those that can run."""
    case_rows, case_entries, runners = [], [], []
    for entry in entries:
        row = {"model": entry.label, "weights": entry.weights, "architecture": entry.architecture,
               "backend": backend, "batch": int(batch), "imgsz": list(hw), "macs": entry.macs,
               "params": entry.params, "onnx_bytes": None, "map50_95": entry.map50_95,
               "map50": entry.map50, "providers": None, "status": "ok", "reason": None}
        rows.append(row)
        try:
            runners.append(_prepare(entry, backend, batch, hw, row, skipped, onnx_dir, opset, threads, trt_fp16,
                                    int8))
            case_rows.append(row)
            case_entries.append(entry)
        except CaseSkipped as e:
            reason = str(e)
            if isinstance(e, BackendUnavailable):
                skipped.setdefault(backend, reason)
            row.update(status="skipped", reason=reason)
            if (backend, reason) not in reported:
                reported.add((backend, reason))
                tqdm.write(f"skip {backend}: {reason}")
    return case_rows, case_entries, runners


def _write_outputs(rows: list, env: dict, out_dir: Path) -> None:
    """bench.md (also printed), bench.json, ops.md with op profiles, and the latency (and mAP) plots."""
    md = to_markdown(rows, env)
    print(md)
    atomic_write_text(out_dir / "bench.md", md)
    atomic_write_text(out_dir / "bench.json", json.dumps({"environment": env, "rows": rows}, indent=2))
    if any(r.get("op_ms") for r in rows):
        atomic_write_text(out_dir / "ops.md", op_profile_markdown(rows))
    plot_latency_vs_macs(rows, out_dir / "latency_vs_macs.png")
    if any(r["map50_95"] is not None and r["status"] == "ok" for r in rows):
        plot_map_vs_latency(rows, out_dir / "map_vs_latency.png")


def _trt_int8_onnx(path: Path, calib, calib_images: int) -> Path:
    """The symmetric QDQ twin of ``path`` TensorRT's int8 mode needs (made once, beside the benchmark's files)."""
    out = path.with_name(f"{path.stem}.trt-int8.onnx")
    if not out.is_file():
        quantize_onnx(path, out, calib, calib_images=calib_images, keep_fp32="decode", latency_check=False,
                      target="trt", verbose=False)
    return out


def _prepare(entry, backend, batch, hw, row, skipped, onnx_dir, opset, threads, trt_fp16, trt_int8=None):
    """A runner for one model x backend x batch; fills the row's providers and ONNX size, or raises CaseSkipped."""
    if backend in skipped:
        raise BackendUnavailable(skipped[backend])
    if get_backend(backend).engine == "torch":
        if entry.detector is None:
            raise CaseSkipped("an .onnx file has no PyTorch model to time")
        device = torch_device(backend)
        row["providers"] = [f"torch:{device}"]
        return torch_runner(entry.deployable(device), hw, batch, device)
    path = entry.onnx_for(batch, onnx_dir, opset)
    if trt_int8 is not None and backend == "ort-trt":
        check_provider(backend)  # no quantization work for a backend that cannot run
        path = _trt_int8_onnx(path, *trt_int8)
        row["precision"] = "int8"
    row["onnx_bytes"] = path.stat().st_size
    session = ort_session(path, backend, threads, trt_fp16, trt_int8=trt_int8 is not None)
    _check_static_shape(session, path, batch, hw)
    row["providers"] = session.get_providers()
    return session_runner(session, hw, batch)


def _check_static_shape(session, path: Path, batch: int, hw: tuple[int, int]) -> None:
    shape = session.get_inputs()[0].shape
    if isinstance(shape[0], int) and shape[0] != batch:
        raise CaseSkipped(f"{path.name} was exported for a fixed batch {shape[0]}, not {batch} "
                                 "(re-export with --dynamic)")
    if all(isinstance(s, int) for s in shape[2:4]) and tuple(shape[2:4]) != tuple(hw):
        raise CaseSkipped(f"{path.name} was exported for {shape[2]}x{shape[3]}, not {hw[0]}x{hw[1]}")


def _evaluate_all(entries, eval_kwargs: dict, threads) -> None:
    for entry in entries:
        model = OrtDetector(entry.weights, providers=None, threads=threads) if entry.is_onnx else entry.detector
        result = coco.evaluate(model, **{"threads": threads, **eval_kwargs})
        entry.map50_95, entry.map50 = _read_map(result)


def _read_map(result) -> tuple[float | None, float | None]:
    """mAP50-95 and mAP50 from the evaluator's result dict (a few spellings accepted)."""
    if not isinstance(result, dict):
        return None, None
    m = next((result[k] for k in ("map50_95", "map", "mAP50-95", "map5095") if k in result), None)
    m50 = next((result[k] for k in ("map50", "mAP50") if k in result), None)
    return (None if m is None else float(m)), (None if m50 is None else float(m50))


def add_ratios(rows: list[dict]) -> None:
    """macs_ratio / latency_ratio / ratio_gap against the largest-MACs row of the same architecture, backend and
    batch (the unpruned parent when it is in the list)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "ok" and r["macs"]:
            groups.setdefault((r.get("architecture"), r["backend"], r["batch"]), []).append(r)
    for group in groups.values():
        ref = max(group, key=lambda r: r["macs"])  # max() keeps the first of equals: the unpruned model listed first
        for r in group:
            r["reference"] = ref["model"]
            r["macs_ratio"] = r["macs"] / ref["macs"]
            r["latency_ratio"] = r["latency_ms_median"] / ref["latency_ms_median"]
            r["ratio_gap"] = r["latency_ratio"] / r["macs_ratio"]


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def to_markdown(rows: list[dict], env: dict) -> str:
    lines = [
        f"Machine: {env['cpu']} ({env['cpu_count']} cores), GPU: {env['gpu'] or 'none'}; threads: "
        f"{env['threads'] or 'default'}; load average at start {env.get('loadavg_start', '-')}, "
        f"end {env.get('loadavg_end', '-')}",
        f"Versions: torch {env['torch']}, onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, "
        f"python {env['python']}; runs {env.get('runs')}, warmup {env.get('warmup')}; {env['date_utc']} UTC",
        "",
        "| model | backend | batch | imgsz | median ms | p90 ms | min ms | img/s | GMACs | params M | ONNX MB "
        "| MACs ratio | latency ratio | gap | mAP50-95 | mAP50 | providers |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            continue
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['batch']} | {r['imgsz'][0]}x{r['imgsz'][1]} "
            f"| {r['latency_ms_median']:.2f} | {r['latency_ms_p90']:.2f} | {r['latency_ms_min']:.2f} "
            f"| {r['images_per_s']:.1f} | {_fmt(r['macs'] and r['macs'] / 1e9, '.3f')} "
            f"| {_fmt(r['params'] and r['params'] / 1e6, '.3f')} "
            f"| {_fmt(r['onnx_bytes'] and r['onnx_bytes'] / 1e6, '.2f')} "
            f"| {_fmt(r.get('macs_ratio'), '.3f')} | {_fmt(r.get('latency_ratio'), '.3f')} "
            f"| {_fmt(r.get('ratio_gap'), '.3f')} | {_fmt(r['map50_95'], '.4f')} | {_fmt(r['map50'], '.4f')} "
            f"| {', '.join(p.replace('ExecutionProvider', '') for p in (r['providers'] or []))} |")
    skipped = {}
    for r in rows:
        if r["status"] != "ok":
            skipped.setdefault((r["backend"], r["reason"]), []).append(r["model"])
    if skipped:
        lines.append("")
        for (backend, reason), models in skipped.items():
            lines.append(f"- skipped {backend} ({', '.join(sorted(set(models)))}): {reason}")
    return "\n".join(lines) + "\n"
