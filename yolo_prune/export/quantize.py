"""INT8 post-training quantization of an exported detector: onnxruntime static quantization (QDQ), calibrated on
real images through our own letterbox preprocessing, with an optional measured sensitivity pass that keeps the
units hurting the output most in fp32.

Units: the nodes of one model layer (the first numbered component of the ONNX node name, e.g. ``model.7`` for
``/model/model.7/cv1/conv/Conv``) form one unit; every node that no Conv follows (the box decode: grid maths,
sigmoid, the final concat of pixel boxes with 0..1 scores) forms the unit ``decode``. The sensitivity of a unit
is how much the quantized model's output error falls when that unit alone stays fp32 (leave-one-out), measured
on calibration images against the fp32 model; ``keep_fp32="auto"`` keeps in fp32 the units (at most
``AUTO_MAX_UNITS``, most sensitive first) that alone cut the all-int8 error by at least ``AUTO_MIN_GAIN``.

Output error (``detection_error``): on the positions the fp32 or the quantized model scores highest (top
``TOP_K`` per image), the mean absolute error of the best fp32 class score plus the mean box error relative to
the box size. It follows what mAP sees (confident boxes and their scores), not background noise.

The fp32 sidecar ``model.onnx.json`` is carried over to ``model.int8.onnx.json`` with a ``quantization``
section, so the evaluator and the benchmark read names, strides and layout as for the fp32 file.
"""
from __future__ import annotations

import copy
import json
import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.sources import list_images, load_data_yaml
from ..eval.coco import select_subset
from ..eval.infer import LetterboxLoader
from ..io import atomic_path, atomic_write_text
from ..runtime.ort import kernel_times, make_session, profiling_session, read_sidecar
# onnx and onnxruntime.quantization are imported inside the functions that use them (heavy)

FORMATS = ("qdq",)
CALIBRATE_METHODS = ("minmax", "percentile", "entropy")
# ops whose int8 kernels (or QDQ drop rules) onnxruntime's CPU provider has: convolutions plus the ops between
# them, so activations stay int8 from one conv to the next instead of de/quantizing around each one
DEFAULT_OP_TYPES = ("Conv", "MatMul", "Gemm", "Add", "Mul", "Sigmoid", "Concat", "MaxPool", "Resize", "Split",
                    "Slice", "Reshape", "Transpose")
TOP_K = 100
AUTO_MIN_GAIN = 0.10  # keep_fp32="auto": a unit stays fp32 when it alone removes >= 10 % of the all-int8 error
AUTO_MAX_UNITS = 4
LATENCY_MARGIN = 0.10  # latency_check: a unit goes back to fp32 when its int8 kernels are > 10 % slower
DECODE = "decode"
MAX_CALIB_BYTES = 2 << 30  # the letterboxed calibration set is held in memory (float32): at most 2 GiB


class QuantizeError(ValueError):
    """The model or the calibration data cannot be quantized (bad path, no images, bad option)."""


# --------------------------------------------------------------------------------------------------- calibration
def calibration_images(calib, n: int) -> list[Path]:
    """``n`` images spread evenly over ``calib``: a data yaml (its train split, else val), an image folder, a .txt
    list or one image. Raises QuantizeError naming the source when it has none."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise QuantizeError(f"--calib-images: expected an integer >= 1, found {n!r}")
    src = Path(str(calib))
    if not src.exists():
        raise QuantizeError(f"--calib {src}: not found (expected a data yaml, an image folder, a .txt list of "
                            "images or one image)")
    try:
        if src.is_file() and src.suffix.lower() in (".yaml", ".yml"):
            d = load_data_yaml(src, splits=())
            split = "train" if d.get("train") else "val"
            if not d.get(split):
                raise QuantizeError(f"--calib {src}: the data yaml has neither 'train' nor 'val' images")
            files = list_images(d[split], field=split)
        else:
            files = list_images(src)
    except FileNotFoundError as e:
        raise QuantizeError(f"--calib {src}: {e}") from None
    if not files:
        raise QuantizeError(f"--calib {src}: no images found")
    return [files[i] for i in select_subset(len(files), n)]


class LetterboxCalibrationReader:
    """onnxruntime ``CalibrationDataReader``: letterboxed float batches in 0..1, exactly as the evaluator feeds the
    model (``yolo_prune.eval.infer.LetterboxLoader``, square canvas of the exported input size).

    A static batch larger than the images left is filled by repeating the batch's images. Unreadable images are
    skipped; ``self.skipped`` lists them and no readable image at all is a QuantizeError.
    """

    def __init__(self, paths, input_name: str, hw: tuple[int, int], batch: int = 1, stride: int = 32):
        self.input_name, self.batch = input_name, max(1, int(batch))
        loader = LetterboxLoader(paths, max(hw), self.batch, stride, rect=False, canvas=tuple(hw))
        self.arrays = []
        for b in loader:
            x = b.images.float().div_(255).contiguous().numpy()
            if x.shape[0] < self.batch:
                x = np.concatenate([x] * math.ceil(self.batch / x.shape[0]))[: self.batch]
            self.arrays.append(np.ascontiguousarray(x, dtype=np.float32))
        self.skipped = loader.skipped
        if not self.arrays:
            why = "; ".join(f"{p}: {r}" for p, r in self.skipped[:3])
            raise QuantizeError(f"--calib: none of the {len(paths)} calibration images could be read ({why})")
        self._i = 0

    def get_next(self):
        if self._i >= len(self.arrays):
            return None
        self._i += 1
        return {self.input_name: self.arrays[self._i - 1]}

    def rewind(self):
        self._i = 0

    def __len__(self):
        return len(self.arrays)


# --------------------------------------------------------------------------------------------------- units
def unit_of(node_name: str) -> str:
    """The model layer a node belongs to: the first numbered path component ('/model/model.7/cv1/Conv' ->
    'model.7'), else the first component; '' for a node without a module path."""
    parts = [p for p in node_name.strip("/").split("/")[:-1] if p]
    for p in parts:
        if re.search(r"\.\d+$", p):
            return p
    return parts[-1] if parts else ""


def node_units(model) -> dict[str, list[str]]:
    """{unit: [node names]}: per model layer, plus ``decode`` = every node no Conv follows (nameless nodes are
    named first, so every node can be excluded by name)."""
    graph = model.graph
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
    conv_after = [False] * len(graph.node)
    for i in range(len(graph.node) - 1, -1, -1):  # nodes are topologically sorted in a valid ONNX graph
        conv_after[i] = any(graph.node[j].op_type == "Conv" or conv_after[j]
                            for t in graph.node[i].output for j in consumers.get(t, ()))
    units: dict[str, list[str]] = {}
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        if node.op_type != "Conv" and not conv_after[i]:
            key = DECODE
        else:
            key = unit_of(node.name) or "graph"
        units.setdefault(key, []).append(node.name)
    return units


# --------------------------------------------------------------------------------------------------- error
def detection_error(ref: np.ndarray, out: np.ndarray, top_k: int = TOP_K) -> float:
    """Error of decoded predictions ``out`` against ``ref`` (B, N, 4 + nc): on the union of both models' top
    ``top_k`` positions per image, mean |score error| of ref's best class + mean |box error| / box size."""
    ref = ref.astype(np.float64)
    out = out.astype(np.float64)
    errs = []
    for r, o in zip(ref, out):
        k = min(top_k, r.shape[0])
        rs, os_ = r[:, 4:].max(1), o[:, 4:].max(1)
        idx = np.union1d(np.argpartition(-rs, k - 1)[:k], np.argpartition(-os_, k - 1)[:k])
        cls = r[idx, 4:].argmax(1)
        score_err = np.abs(r[idx, 4 + cls] - o[idx, 4 + cls]).mean()
        size = np.maximum(r[idx, 2:4].max(1, keepdims=True), 1.0)
        box_err = (np.abs(r[idx, :4] - o[idx, :4]) / size).mean()
        errs.append(score_err + box_err)
    return float(np.mean(errs))


def _run_all(path, feeds: list[dict], threads: int | None) -> list[np.ndarray]:
    session = make_session(path, providers=["cpu"], threads=threads)
    name = session.get_outputs()[0].name
    return [session.run([name], f)[0] for f in feeds]


def _mean_error(refs, outs) -> float:
    return float(np.mean([detection_error(r, o) for r, o in zip(refs, outs)]))


def unit_kernel_ms(path, feed: dict, runs: int = 10, threads: int | None = 1) -> dict[str, float]:
    """Milliseconds per call spent in each unit's kernels (onnxruntime CPU profiler; nodes fused or created by
    the optimiser keep their source node's path, so they land in the same unit)."""
    session = profiling_session(path, threads, prefix="yolo_prune_qprof")
    for _ in range(runs + 2):
        session.run(None, feed)
    per_unit: dict[str, list[float]] = {}
    for node, _, ms in kernel_times(session):
        per_unit.setdefault(unit_of(node), []).append(ms)
    # the first two calls warm up (allocations, packed weights): drop their share of every unit
    return {u: sum(v) * runs / (runs + 2) / runs for u, v in per_unit.items()}


def slower_in_int8(fp32_ms: dict, int8_ms: dict, margin: float = LATENCY_MARGIN) -> list[dict]:
    """Units whose int8 kernels (Q/DQ included) take longer than their fp32 kernels by more than ``margin``."""
    rows = []
    for u, t32 in fp32_ms.items():
        if not u:
            continue
        t8 = int8_ms.get(u, 0.0)
        if t8 > t32 * (1 + margin):
            rows.append({"unit": u, "fp32_ms": t32, "int8_ms": t8})
    return sorted(rows, key=lambda r: r["fp32_ms"] - r["int8_ms"])


# --------------------------------------------------------------------------------------------------- quantize
def _quant_types():
    from onnxruntime.quantization import QuantType

    return QuantType


@dataclass(frozen=True)
class _Settings:
    """How every trial quantizes (``quantize_onnx``'s arguments of the same names)."""
    per_channel: bool
    op_types: tuple
    calibrate_method: str
    reduce_range: bool
    target: str = "cpu"


def _static_quantize(src: Path, dst: Path, reader, cache: Path, exclude: list[str], settings: _Settings) -> None:
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[settings.calibrate_method]
    qt = _quant_types()
    if reader is not None:
        reader.rewind()
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the "consider pre-processing" hint: we did
    try:
        # CPU: uint8 activations (MLAS' u8s8 kernels); TensorRT: symmetric int8 everywhere (zero point 0)
        trt = settings.target == "trt"
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
                        per_channel=settings.per_channel or trt, reduce_range=settings.reduce_range,
                        activation_type=qt.QInt8 if trt else qt.QUInt8, weight_type=qt.QInt8,
                        op_types_to_quantize=list(settings.op_types), nodes_to_exclude=list(exclude),
                        calibrate_method=method, calibration_cache_path=str(cache),
                        extra_options={"ActivationSymmetric": trt, "WeightSymmetric": True})
    finally:
        logging.getLogger().setLevel(level)


def _parse_keep(keep_fp32) -> tuple[str, object]:
    """None/'none'/0 -> ('none', None); 'auto' -> ('auto', None); int or digits -> ('count', n);
    names (list or comma separated) -> ('names', [...])."""
    if keep_fp32 is None or keep_fp32 is False:
        return "none", None
    if isinstance(keep_fp32, (list, tuple)):
        names = [str(x).strip() for x in keep_fp32 if str(x).strip()]
        if len(names) == 1:
            return _parse_keep(names[0])
        return ("names", names) if names else ("none", None)
    if isinstance(keep_fp32, int) and not isinstance(keep_fp32, bool):
        if keep_fp32 < 0:
            raise QuantizeError(f"--keep-fp32: expected auto, a count >= 0 or unit names, found {keep_fp32}")
        return ("none", None) if keep_fp32 == 0 else ("count", keep_fp32)
    text = str(keep_fp32).strip()
    if text.lower() in ("", "none", "0"):
        return "none", None
    if text.lower() == "auto":
        return "auto", None
    if text.isdigit():
        return "count", int(text)
    return "names", [t.strip() for t in text.split(",") if t.strip()]


def _check_arguments(src: Path, out: Path, target: str, fmt: str, calibrate_method: str, sensitivity_images) -> None:
    if src.suffix.lower() != ".onnx" or not src.is_file():
        raise QuantizeError(f"--weights {src}: expected an exported fp32 .onnx file (tools/export_onnx.py)"
                            + ("" if src.is_file() else ", file not found"))
    if out.suffix.lower() != ".onnx":
        raise QuantizeError(f"--out {out}: expected a path ending in .onnx")
    if out.resolve() == src.resolve():
        raise QuantizeError(f"--out {out}: must differ from --weights")
    if target not in ("cpu", "trt"):
        raise QuantizeError(f"target: expected cpu or trt, found {target!r}")
    if fmt not in FORMATS:
        raise QuantizeError(f"--format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
    if calibrate_method not in CALIBRATE_METHODS:
        raise QuantizeError(f"--calibrate-method: expected one of {', '.join(CALIBRATE_METHODS)}, "
                            f"found {calibrate_method!r}")
    if isinstance(sensitivity_images, bool) or not isinstance(sensitivity_images, int) or sensitivity_images < 1:
        raise QuantizeError(f"--sensitivity-images: expected an integer >= 1, found {sensitivity_images!r}")


def _load_fp32(src: Path):
    import onnx

    try:
        proto = onnx.load(str(src))
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise QuantizeError(f"--weights {src}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer):
        raise QuantizeError(f"--weights {src}: an fp16 export; quantize the fp32 export (without --half)")
    return proto


def _choose_fp32_units(keep_mode: str, keep_arg, units: dict, error_if_fp32, err_all: float, src: Path,
                       verbose: bool) -> tuple[list, list]:
    """(units kept in fp32, the sensitivity rows): named ones, or by leave-one-out gains (count / auto)."""
    from tqdm import tqdm

    sensitivity: list[dict] = []
    if keep_mode == "names":
        unknown = [u for u in keep_arg if u not in units]
        if unknown:
            raise QuantizeError(f"--keep-fp32: unknown unit(s) {unknown}; units of {src.name}: "
                                f"{', '.join(units)}")
        return list(keep_arg), sensitivity
    if keep_mode not in ("auto", "count"):
        return [], sensitivity
    for u in tqdm(list(units), desc="sensitivity", unit="unit", disable=not verbose, leave=False):
        e = error_if_fp32(u)
        sensitivity.append({"unit": u, "nodes": len(units[u]), "error_if_fp32": e,
                            "gain": (err_all - e) / err_all if err_all > 0 else 0.0})
    sensitivity.sort(key=lambda s: -s["gain"])
    if keep_mode == "count":
        return [s["unit"] for s in sensitivity[:keep_arg]], sensitivity
    # the measured leave-one-out gains decide: each kept unit must cut >= AUTO_MIN_GAIN of the error
    return [s["unit"] for s in sensitivity[:AUTO_MAX_UNITS] if s["gain"] >= AUTO_MIN_GAIN], sensitivity


def _input_geometry(inp, src: Path, imgsz, calib_images: int) -> tuple[int, tuple]:
    """(batch, (h, w)) of the image input (dynamic dims: 1 and ``imgsz``); refuses a calibration set too big."""
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise QuantizeError(f"--weights {src}: expected one image input (B, 3, H, W), found {len(dims)} dims")
    hw = (dims[2], dims[3]) if dims[2] and dims[3] else (imgsz or 640, imgsz or 640)
    per_image = 3 * hw[0] * hw[1] * 4
    if calib_images * per_image > MAX_CALIB_BYTES:
        raise QuantizeError(f"--calib-images {calib_images}: at {hw[0]}x{hw[1]} that needs "
                            f"{calib_images * per_image / 2**30:.1f} GiB of memory; use at most "
                            f"{MAX_CALIB_BYTES // per_image} (a few hundred images calibrate well)")
    return dims[0] or 1, hw


def _save_quantized(final: Path, proto, fmt: str, target: str, part: Path) -> int:
    """Write the quantized model to ``part`` with the fp32 export's metadata plus ours; its QuantizeLinear count."""
    import onnx

    q = onnx.load(str(final))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({p.key: p.value for p in q.metadata_props if p.key not in props})
    props["quantization"] = json.dumps({"format": fmt, "activation": "int8" if target == "trt" else "uint8",
                                        "weight": "int8", "target": target})
    onnx.helper.set_model_props(q, props)
    part.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(q, str(part))
    return sum(n.op_type == "QuantizeLinear" for n in q.graph.node)


@dataclass
class _Calibration:
    """The calibration images as the reader feeds them, and the first batches, which score every trial."""
    paths: list
    reader: LetterboxCalibrationReader
    input_name: str
    hw: tuple
    sens_feeds: list


def _calibration(proto, src: Path, side: dict, calib, calib_images: int, sensitivity_images: int,
                 imgsz) -> _Calibration:
    inp = proto.graph.input[0]
    batch, hw = _input_geometry(inp, src, imgsz, calib_images)
    stride = int(max(side.get("strides") or [32]))
    paths = calibration_images(calib, calib_images)
    reader = LetterboxCalibrationReader(paths, inp.name, hw, batch, stride)
    sens_feeds = reader.arrays[: max(1, math.ceil(sensitivity_images / batch))]
    return _Calibration(paths, reader, inp.name, hw, [{inp.name: a} for a in sens_feeds])


class _Trials:
    """The pre-processed fp32 model (every node named) and its outputs on the sensitivity feeds;
    ``error_excluding(units, dst)`` quantizes with those units kept fp32 and scores the result against fp32."""

    def __init__(self, src: Path, tmp: Path, cal: _Calibration, settings: _Settings, threads: int | None):
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.pre = tmp / "pre.onnx"
        quant_pre_process(str(src), str(self.pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(self.pre))
        self.units = node_units(pre_model)
        onnx.save(pre_model, str(self.pre))  # with every node named
        self.cache = tmp / "calibration.json"
        self.cal, self.settings, self.threads = cal, settings, threads
        self.refs = _run_all(self.pre, cal.sens_feeds, threads)

    def error_excluding(self, names: list[str], dst: Path) -> float:
        exclude = [n for u in names for n in self.units.get(u, ())]
        _static_quantize(self.pre, dst, self.cal.reader, self.cache, exclude, self.settings)
        return _mean_error(self.refs, _run_all(dst, self.cal.sens_feeds, self.threads))

    def slower_in_int8(self, final: Path, kept: list[str]) -> list[dict]:
        """Units not yet kept whose int8 kernels in ``final`` are slower than their fp32 ones (CPU profiler)."""
        feed = self.cal.sens_feeds[0]
        threads = self.threads or 1
        fp32_ms = unit_kernel_ms(self.pre, feed, threads=threads)
        return [r for r in slower_in_int8(fp32_ms, unit_kernel_ms(final, feed, threads=threads))
                if r["unit"] in self.units and r["unit"] not in kept]


def quantize_onnx(weights, out, calib, calib_images: int = 64, per_channel: bool = False, fmt: str = "qdq",
                  keep_fp32="auto", sensitivity_images: int = 8, op_types=DEFAULT_OP_TYPES,
                  calibrate_method: str = "minmax", reduce_range: bool = False, latency_check: bool = True,
                  imgsz: int | None = None, threads: int | None = None, verbose: bool = True,
                  target: str = "cpu") -> dict:
    """Quantize the fp32 ONNX detector ``weights`` to INT8 (QDQ) at ``out``; returns the report, also written into
    ``out``'s sidecar json.

    ``calib``: data yaml / image folder / .txt list; ``calib_images`` of its images (evenly spread) calibrate the
    activation ranges, the first ``sensitivity_images`` of them also score the sensitivity pass.
    ``keep_fp32``: 'auto' (measured, greedy), N (the N most sensitive units), unit names ('decode,model.24'), or
    None/0 (quantize every unit). ``latency_check``: profile the fp32 and the int8 model per unit on the CPU
    provider (1 thread unless ``threads``) and also keep fp32 the units whose int8 kernels are slower (on CPUs
    without VNNI, e.g. a 3-channel first conv or an int8 SiLU can be). ``imgsz`` is only needed for a dynamic-shape export (default 640).
    ``target``: 'cpu' (uint8 activations, int8 weights) or 'trt' (symmetric int8, per-channel weights: what
    TensorRT's explicit quantization accepts). Nothing is written unless the whole run succeeds.
    """
    t0 = time.perf_counter()
    src, out = Path(str(weights)), Path(str(out))
    _check_arguments(src, out, target, fmt, calibrate_method, sensitivity_images)
    keep_mode, keep_arg = _parse_keep(keep_fp32)
    side = read_sidecar(src)
    proto = _load_fp32(src)
    cal = _calibration(proto, src, side, calib, calib_images, sensitivity_images, imgsz)
    settings = _Settings(per_channel, op_types, calibrate_method, reduce_range, target)
    with atomic_path(out, ".tmp.onnx") as part:  # the model appears only once its sidecar is written
        with tempfile.TemporaryDirectory(prefix="yolo_prune_quant_") as tmp:
            trials = _Trials(src, Path(tmp), cal, settings, threads)
            final = Path(tmp) / "final.onnx"
            choice = _choose_and_quantize(trials, final, keep_mode, keep_arg, latency_check, src, verbose)
            n_q = _save_quantized(final, proto, fmt, target, part)

        report = {
            "format": fmt, "per_channel": per_channel or target == "trt", "reduce_range": reduce_range,
            "activation_type": "int8" if target == "trt" else "uint8",
            "weight_type": "int8", "target": target, "calibrate_method": calibrate_method, "op_types": list(op_types),
            "calib": str(calib), "calib_images": len(cal.paths), "calib_batches": len(cal.reader),
            "calib_skipped": cal.reader.skipped,
            "sensitivity_images": sum(f[cal.input_name].shape[0] for f in cal.sens_feeds),
            "input_hw": list(cal.hw), "keep_fp32": keep_fp32 if isinstance(keep_fp32, (str, int, type(None))) else
            list(keep_fp32), "kept_fp32_units": choice["kept"],
            "kept_fp32_nodes": sum(len(trials.units[u]) for u in choice["kept"]),
            "units": len(trials.units), "quantize_nodes": n_q, "error_all_int8": choice["error_all_int8"],
            "error": choice["error"], "sensitivity": choice["sensitivity"],
            "latency_check": latency_check, "kept_for_latency": choice["kept_for_latency"], "fp32_source": str(src),
            "seconds": time.perf_counter() - t0,
        }
        _write_sidecar(out, src, side, report)
    return report


def _choose_and_quantize(trials: _Trials, final: Path, keep_mode: str, keep_arg, latency_check: bool, src: Path,
                         verbose: bool) -> dict:
    """Quantize into ``final`` with the units chosen to stay fp32 (named, most sensitive, or slower in int8)."""
    trial = trials.pre.with_name("trial.onnx")
    err_all = trials.error_excluding([], trial)
    kept, sensitivity = _choose_fp32_units(keep_mode, keep_arg, trials.units,
                                           lambda u: trials.error_excluding([u], trial), err_all, src, verbose)
    err_final = trials.error_excluding(kept, final)
    slow: list[dict] = []
    if latency_check and keep_mode != "names":
        slow = trials.slower_in_int8(final, kept)
        if slow:
            kept += [r["unit"] for r in slow]
            err_final = trials.error_excluding(kept, final)
    return {"kept": kept, "sensitivity": sensitivity, "error_all_int8": err_all, "error": err_final,
            "kept_for_latency": slow}


def _write_sidecar(out: Path, src: Path, side: dict, report: dict) -> None:
    """The fp32 sidecar with a ``quantization`` section, beside ``out`` (the model is renamed in after it)."""
    new_side = copy.deepcopy(side) if side else {}
    new_side.update({"onnx": out.name, "quantized_from": str(src), "quantization": report})
    atomic_write_text(Path(str(out) + ".json"), json.dumps(new_side, indent=2, default=str))


def sensitivity_markdown(report: dict) -> str:
    """The sensitivity table: units by how much keeping them fp32 cuts the output error."""
    lines = [f"all-int8 output error {report['error_all_int8']:.4f}; kept fp32: "
             f"{', '.join(report['kept_fp32_units']) or 'none'} -> error {report['error']:.4f}"]
    for r in report.get("kept_for_latency") or ():
        lines.append(f"- {r['unit']} kept fp32 for speed: int8 {r['int8_ms']:.2f} ms vs fp32 {r['fp32_ms']:.2f} ms")
    lines.append("")
    if report["sensitivity"]:
        lines += ["| unit | nodes | error if fp32 | error cut |", "|---|---|---|---|"]
        lines += [f"| {s['unit']} | {s['nodes']} | {s['error_if_fp32']:.4f} | {s['gain']:.1%} |"
                  for s in report["sensitivity"]]
    return "\n".join(lines) + "\n"
