"""The runtimes a model is timed or run on, in one registry (``backends.py``): names, engine, device, onnxruntime
provider and the channel multiples the latency planner tries. ``export/benchmark.py``, ``export/ort.py`` and
``prune/latency.py`` read it; the runners themselves still live in ``export/`` (issue 15 item 6, next step)."""
from .backends import Backend, backend_names, get_backend, provider_aliases, register_backend

__all__ = ["Backend", "backend_names", "get_backend", "provider_aliases", "register_backend"]
