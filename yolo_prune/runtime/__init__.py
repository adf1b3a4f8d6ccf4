"""Where a model runs: the backend registry (``backends.py``: names, engine, device, onnxruntime provider, the
channel multiples the latency planner tries), onnxruntime sessions and ``OrtDetector`` (``ort.py``), the output
layouts a runtime reads (``layouts.py``), the timed runners per backend (``runners.py``) and the host's CPU and
threads (``host.py``). ``eval/``, ``export/`` and ``prune/latency.py`` use it; it imports nothing else of ours."""
from .backends import Backend, backend_names, get_backend, provider_aliases, register_backend
from .ort import OrtDetector, ProviderUnavailableError, make_session, read_sidecar

__all__ = ["Backend", "OrtDetector", "ProviderUnavailableError", "backend_names", "get_backend", "make_session",
           "provider_aliases", "read_sidecar", "register_backend"]
