"""Backend registry: one ``Backend`` per runtime name (``--backend`` / ``--backends`` values). Imports nothing."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    """* ``engine``: "torch" or "ort"; ``device``: "cpu", "cuda" or "auto" (CUDA when visible, else the CPU);
    * ``provider``: the onnxruntime execution provider (ort engines), with ``alias`` its short name (cpu, cuda,
      trt) that ``runtime.ort.provider_name`` accepts;
    * ``round_to``: channel multiples worth trying when pruning for latency on it (CPU NCHWc blocks are 8 on AVX2,
      16 on AVX-512; GPU tensor-core tiles want 8 for fp16 up to 32 for int8); empty: not a latency target."""
    name: str
    engine: str
    device: str
    provider: str | None = None
    alias: str | None = None
    round_to: tuple = ()


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    _BACKENDS[backend.name] = backend
    return backend


def backend_names(latency: bool = False) -> tuple:
    """Every registered backend; ``latency=True``: those ``--target-latency`` can measure on."""
    return tuple(n for n, b in _BACKENDS.items() if b.round_to or not latency)


def get_backend(name) -> Backend:
    backend = _BACKENDS.get(name) if isinstance(name, str) else None
    if backend is None:
        raise ValueError(f"backend: expected one of {', '.join(_BACKENDS)}, found {name!r}")
    return backend


def provider_aliases() -> dict:
    """{short name: onnxruntime provider}: cpu, cuda, trt (and tensorrt)."""
    out = {b.alias: b.provider for b in _BACKENDS.values() if b.alias}
    if "trt" in out:
        out["tensorrt"] = out["trt"]
    return out


for _b in (Backend("torch", "torch", "auto", round_to=(8, 16)), Backend("torch-cpu", "torch", "cpu"),
           Backend("torch-cuda", "torch", "cuda"),
           Backend("ort-cpu", "ort", "cpu", "CPUExecutionProvider", "cpu", (8, 16)),
           Backend("ort-cuda", "ort", "cuda", "CUDAExecutionProvider", "cuda", (8, 16, 32)),
           Backend("ort-trt", "ort", "cuda", "TensorrtExecutionProvider", "trt", (8, 16, 32))):
    register_backend(_b)
