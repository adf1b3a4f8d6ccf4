"""Runners: one zero-argument call per model x backend x batch, what the benchmark and the latency planner time.

``torch_runner`` (a PyTorch forward, CUDA synchronised) and ``ort.session_runner`` (one ``session.run``) run a
fixed random batch; ``torch_device`` / ``ort_session`` turn a registered backend name (``backends.py``) into the
device or the onnxruntime session it runs on, raising ``BackendUnavailable`` with a one-line reason when this
machine cannot run it. ``interleaved_times`` times several runners round-robin.
"""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from .backends import get_backend
from .ort import ProviderUnavailableError, make_session
# onnxruntime is imported inside the functions that use it (heavy, not needed to import yolo_prune)


class CaseSkipped(RuntimeError):
    """This model x backend x batch cannot be timed (e.g. a static ONNX file at another batch)."""


class BackendUnavailable(CaseSkipped):
    """This backend cannot run on this machine at all; the message is the one-line reason."""


def torch_runner(model, imgsz: tuple[int, int], batch: int, device: str):
    """One forward of ``model`` on a fixed random batch; CUDA is synchronised so the clock sees the work."""
    dev = torch.device(device)
    x = torch.rand(batch, 3, *imgsz, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run():
        with torch.inference_mode():
            model(x)
        sync()

    return run


def interleaved_times(runners: list, runs: int, warmup: int, desc: str = "timing") -> list[list[float]]:
    """Seconds per call for each runner, calling them round-robin (rotating who goes first).

    On a machine shared with other work the load changes from second to second; timing model A's 100 runs and
    then model B's would compare them under different loads. Interleaving gives every model the same mix.
    """
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    n = len(runners)
    for i in tqdm(range(runs), desc=desc, unit="round", leave=False):
        for k in range(n):
            idx = (i + k) % n
            t = time.perf_counter()
            runners[idx]()
            times[idx].append(time.perf_counter() - t)
    return times


def torch_device(backend: str) -> str:
    """The torch device of a torch backend: its registered one, "auto" being CUDA when torch sees a GPU."""
    device = get_backend(backend).device
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("torch sees no CUDA device")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_provider(backend: str) -> str:
    """The onnxruntime provider of an ort backend, if this build has it and, for a GPU one, a GPU is visible."""
    import onnxruntime as ort

    provider = get_backend(backend).provider
    if provider not in ort.get_available_providers():
        raise BackendUnavailable(f"{provider} is not in this onnxruntime build ({ort.__version__})")
    if provider != "CPUExecutionProvider" and not torch.cuda.is_available():
        raise BackendUnavailable(f"{provider} needs a CUDA GPU and none is visible")
    return provider


def ort_session(path, backend: str, threads, trt_fp16: bool, trt_int8: bool = False):
    """A timing session for ``path`` on exactly ``backend``'s provider (``make_session``: no silent fallback),
    its intra-op workers not spinning between runs, so that sessions timed in turn do not slow each other."""
    provider = check_provider(backend)
    if provider == "TensorrtExecutionProvider" and trt_int8:  # explicit (QDQ) int8, fp16 where TRT keeps float
        provider = (provider, {"trt_int8_enable": True, "trt_fp16_enable": True})
    try:
        return make_session(path, providers=[provider], threads=threads, trt_fp16=trt_fp16, spinning=False)
    except ProviderUnavailableError as e:
        raise BackendUnavailable(str(e).splitlines()[0]) from e
