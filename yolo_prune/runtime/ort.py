"""onnxruntime sessions that never fall back silently, and ``OrtDetector``: an ONNX file behind the Detector call.

onnxruntime quietly drops an execution provider it cannot initialise (no GPU, missing CUDA/cuDNN/TensorRT
libraries) and runs on the CPU instead. ``make_session`` compares the providers asked for with
``session.get_providers()`` and raises when an explicitly requested one is missing.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .backends import provider_aliases
from .layouts import LAYOUTS, to_ours
# onnxruntime is imported inside the functions that use it (heavy, not needed to import yolo_prune)

PROVIDER_ALIASES = provider_aliases()  # cpu, cuda, trt, tensorrt (yolo_prune/runtime/backends.py)

_ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class ProviderUnavailableError(RuntimeError):
    """An explicitly requested onnxruntime execution provider is not usable on this machine."""


class OnnxModelError(ValueError, RuntimeError):
    """onnxruntime refused the file (not a model, corrupt, invalid graph, external data outside its folder).

    A ValueError like every refusal of bad input (the tools print it in one line), and a RuntimeError as before."""


def provider_name(name: str) -> str:
    """'cpu' / 'cuda' / 'trt' or a full onnxruntime provider name -> the full name."""
    return PROVIDER_ALIASES.get(name.lower(), name)


def default_providers() -> list[str]:
    """CUDA when this process can see a GPU, else the CPU; an implicit choice is never an error."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if torch.cuda.is_available() and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(path: str | os.PathLike, providers=None, threads: int | None = None, trt_fp16: bool = False,
                 spinning: bool = True):
    """An ``InferenceSession`` for ``path``; raises ``ProviderUnavailableError`` if a requested provider is missing.

    ``providers``: None (default choice), or a list of names/aliases ('cpu', 'cuda', 'trt'), optionally as
    (name, options) pairs. The CPU provider is always appended as the last resort for unsupported nodes, but a
    requested GPU provider that did not load is an error, never a silent fallback.
    ``threads``: intra-op threads (None = onnxruntime's default, all cores). ``spinning=False``: the intra-op
    workers sleep instead of busy-waiting after a run. Timing sessions need that: several sessions timed in turn
    (``interleaved_times``) would otherwise spin on the cores the running one needs (2 vCPUs, 2 threads, two
    yolov5n sessions: 19.5-22.9 / 14.6 ms spinning against 11.1-11.6 / 7.3-7.8 ms not; docs/BENCHMARKS.md).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found (export one with tools/export_onnx.py)")
    chain = _provider_chain(default_providers() if providers is None else list(providers), trt_fp16)
    try:
        session = ort.InferenceSession(str(path), sess_options=_session_options(threads, spinning),
                                       providers=[n for n, _ in chain], provider_options=[o for _, o in chain])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
        raise OnnxModelError(f"{path}: onnxruntime could not load the model with providers "
                             f"{[n for n, _ in chain]}: {first}") from e
    if providers is not None:  # an explicit request: a provider that did not load is an error
        _refuse_fallback(chain, session.get_providers())
    return session


def _provider_chain(requested: list, trt_fp16: bool) -> list[tuple[str, dict]]:
    """[(full provider name, options)], the CPU provider last; refuses a provider this build does not include."""
    import onnxruntime as ort

    chain: list = []
    for p in requested:
        name, options = (p if isinstance(p, (tuple, list)) else (p, None))
        name = provider_name(name)
        if name == "TensorrtExecutionProvider" and options is None:
            options = {"trt_fp16_enable": bool(trt_fp16)}
        chain.append((name, options or {}))
    available = ort.get_available_providers()
    for name, _ in chain:
        if name not in available:
            raise ProviderUnavailableError(
                f"onnxruntime provider '{name}' was requested but this onnxruntime build "
                f"({ort.__version__}) does not include it; available: {', '.join(available)}")
    if "CPUExecutionProvider" not in [n for n, _ in chain]:
        chain.append(("CPUExecutionProvider", {}))
    return chain


def _session_options(threads: int | None, spinning: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # the fallback warning is replaced by our own check (_refuse_fallback)
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _refuse_fallback(chain: list, used: list) -> None:
    missing = [n for n, _ in chain if n not in used]
    if missing:
        hint = ("no CUDA device visible or the CUDA/cuDNN libraries onnxruntime-gpu needs are missing"
                if any(m in _GPU_PROVIDERS for m in missing) else "see onnxruntime's log")
        raise ProviderUnavailableError(
            f"onnxruntime provider(s) {', '.join(missing)} were requested but could not be initialised "
            f"({hint}); the session fell back to {', '.join(used)}")


def session_runner(session, imgsz: tuple[int, int], batch: int):
    """One ``session.run`` on a fixed random host batch."""
    inp = session.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    feed = {inp.name: np.random.default_rng(0).random((batch, 3, *imgsz), dtype=np.float32).astype(dtype)}
    return lambda: session.run(None, feed)


# --------------------------------------------------------------------------------------------------- profiling
def profiling_session(path, threads: int | None, prefix: str = "yolo_prune_ortprof"):
    """A CPU-provider session with onnxruntime's profiler on; read it back with ``kernel_times``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"{prefix}_{os.getpid()}")
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def kernel_times(session) -> list[tuple[str, str, float]]:
    """Ends ``session``'s profiling: (node name, op type, ms) per kernel call, the trace file deleted.

    Nodes the optimiser fused or created keep their source node's name."""
    trace = Path(session.end_profiling())
    try:
        events = json.loads(trace.read_text())
    finally:
        trace.unlink(missing_ok=True)
    suffix = "_kernel_time"
    return [(str(e["name"])[: -len(suffix)], e.get("args", {}).get("op_name", "?"), e["dur"] / 1000.0)
            for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(suffix)]


# --------------------------------------------------------------------------------------------------- detector
MAX_SIDECAR_BYTES = 64 * 1024 * 1024  # the sidecar of a 100,000-class model is about 2 MB
MAX_OUTPUT_STRIDE = 1024  # a detector's coarsest output level (P7 models: 128); images are padded to its multiple


def read_sidecar(path: str | os.PathLike) -> dict:
    """``model.onnx.json`` written by ``export_onnx`` beside the ONNX file, or {} when absent."""
    side = Path(str(path) + ".json")
    if not side.is_file():
        return {}
    if side.stat().st_size > MAX_SIDECAR_BYTES:
        raise ValueError(f"{side}: {side.stat().st_size:,} bytes, more than the {MAX_SIDECAR_BYTES:,} an export "
                         "sidecar may have; delete it or re-export the model")
    try:
        meta = json.loads(side.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, 4300-digit integers
        raise ValueError(f"{side}: not valid UTF-8 JSON ({type(e).__name__}: {e}); delete it or re-export the "
                         "model"[:400]) from None
    if not isinstance(meta, dict):
        raise ValueError(f"{side}: expected a JSON object (names, strides, ...), found {type(meta).__name__}")
    return meta


def _checked_strides(strides, source: str) -> tuple[int, ...]:
    """Output strides: a list of integers in 1..MAX_OUTPUT_STRIDE (each input is padded to a multiple of the
    largest, so a huge one would make every image a canvas of gigabytes)."""
    from ..models.validate import check_int

    if not isinstance(strides, (list, tuple)) or len(strides) > 16:
        raise ValueError(f"{source}: field 'strides' expected a list of at most 16 integers, found {strides!r}"[:300])
    return tuple(check_int(s, source, f"strides[{i}]", 1, MAX_OUTPUT_STRIDE) for i, s in enumerate(strides))


def _check_input_shape(shape, source: str) -> None:
    """The fixed sizes of the model's input (B, 3, H, W): positive, and one batch within max_activation elements
    (the evaluation allocates and pads whole batches of that size)."""
    from ..models.validate import _over, limits

    if len(shape) != 4:
        raise ValueError(f"{source}: input expected 4 dimensions (B, 3, H, W), found {list(shape)}")
    fixed = [d for d in shape if isinstance(d, int)]
    if any(d < 1 for d in fixed):
        raise ValueError(f"{source}: input expected positive sizes (B, 3, H, W), found {list(shape)}")
    n, lim = int(np.prod(fixed, dtype=object)), limits().max_activation
    if n > lim:
        raise _over(source, f"input shape {list(shape)}", "max_activation", lim, f"{n:,} elements")


class OrtDetector:
    """Run an exported ONNX detector like the PyTorch ``Detector`` in eval mode.

    ``det(x)`` takes a float32 NCHW tensor (pixel values 0..1) and returns a float32 tensor (B, N, 4 + nc):
    cx, cy, w, h in input pixels, then class scores, on ``x``'s device.
    Attributes: ``names``, ``nc``, ``strides``, ``imgsz`` ((h, w) or None if dynamic), ``batch`` (None if
    dynamic), ``providers`` (the ones the session actually uses), ``family``, ``meta`` (the sidecar json).
    A batch that differs from a static export batch is run in chunks of that batch, the last one zero-padded.
    """

    def __init__(self, path: str | os.PathLike, providers=None, threads: int | None = None, trt_fp16: bool = False):
        self.path = Path(path)
        self.session = make_session(self.path, providers, threads, trt_fp16=trt_fp16)
        self.providers = self.session.get_providers()
        self.meta = read_sidecar(self.path)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = _ORT_TO_NUMPY.get(inp.type, np.float32)
        self.output_name = self.session.get_outputs()[0].name
        shape = inp.shape
        _check_input_shape(shape, str(self.path))
        self.batch = shape[0] if isinstance(shape[0], int) else None
        self.imgsz = (shape[2], shape[3]) if all(isinstance(s, int) for s in shape[2:4]) else None
        self._read_description(self.session.get_modelmeta().custom_metadata_map)
        self.device = torch.device("cpu")

    def _read_description(self, props: dict) -> None:
        """names, strides, family and output layout: from the sidecar json, else the ONNX metadata."""
        names = self.meta.get("names") or _json_prop(props, "names", self.path)
        if not names:
            raise ValueError(f"{self.path}: class names not found: expected 'names' in {self.path}.json or in the "
                             "ONNX metadata (export with yolo_prune.export.export_onnx)")
        from ..models.validate import check_int, limits, names_dict

        self.names = names_dict(names, str(self.path))
        check_int(len(self.names), str(self.path), "names (number of classes)", 1, limits().max_classes,
                  "max_classes")
        strides = self.meta.get("strides") or _json_prop(props, "strides", self.path) or []
        self.strides = _checked_strides(strides, str(self.path))
        self.family = str(self.meta.get("family") or props.get("family", ""))[:100]
        # output0 layout (runtime/layouts.py): read back as ours, so every layout scores and benchmarks the same
        self.layout = self.meta.get("output_layout") or props.get("layout") or "ours"
        if not isinstance(self.layout, str) or self.layout not in LAYOUTS:
            raise ValueError(f"{self.path}: output layout {self.layout!r} unknown (expected one of "
                             f"{', '.join(LAYOUTS)})")

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def stride(self) -> int:
        return max(self.strides) if self.strides else 32

    def eval(self):
        return self

    def to(self, device):
        """Outputs are returned on ``device``; inference itself stays with the session's providers."""
        self.device = torch.device(device)
        return self

    def _run(self, x: np.ndarray) -> np.ndarray:
        return to_ours(self.session.run([self.output_name], {self.input_name: x})[0], self.layout)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.path}: expected an input tensor (B, 3, H, W), found shape {tuple(x.shape)}")
        if self.imgsz is not None and tuple(x.shape[2:]) != tuple(self.imgsz):
            raise ValueError(f"{self.path}: exported for a fixed {self.imgsz[0]}x{self.imgsz[1]} input, found "
                             f"{x.shape[2]}x{x.shape[3]}; use --imgsz {self.imgsz[1]} or re-export with --dynamic")
        out_device = x.device
        arr = x.detach().to("cpu", torch.float32).numpy().astype(self.input_dtype, copy=False)
        n = arr.shape[0]
        if self.batch is None or n == self.batch:
            y = self._run(np.ascontiguousarray(arr))
        else:
            parts = []
            for start in range(0, n, self.batch):
                chunk = arr[start:start + self.batch]
                k = chunk.shape[0]
                if k < self.batch:
                    pad = np.zeros((self.batch - k, *chunk.shape[1:]), dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                parts.append(self._run(np.ascontiguousarray(chunk))[:k])
            y = np.concatenate(parts)
        return torch.from_numpy(y.astype(np.float32, copy=False)).to(out_device)

    forward = __call__

    def __repr__(self) -> str:
        return (f"OrtDetector({self.path}, nc={self.nc}, imgsz={self.imgsz}, batch={self.batch}, "
                f"providers={self.providers})")


def _json_prop(props: dict, key: str, path: Path):
    if key not in props:
        return None
    try:
        return json.loads(props[key])
    except (ValueError, RecursionError) as e:  # JSONDecodeError, 4300-digit integers, deep nesting
        raise ValueError(f"{path}: ONNX metadata '{key}' is not valid JSON ({type(e).__name__}): "
                         f"{props[key][:80]!r}") from None
