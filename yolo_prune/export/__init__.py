"""Export stage: ONNX export with in-graph decoding and verification, INT8 quantization, latency benchmark.

``OrtDetector``, ``ProviderUnavailableError`` and ``make_session`` live in ``yolo_prune.runtime``; they are
re-exported here because the export's users run what they exported with them."""
from ..runtime.ort import OrtDetector, ProviderUnavailableError, make_session
from .onnx import ExportError, ExportOptions, export_onnx

__all__ = ["export_onnx", "ExportError", "ExportOptions", "OrtDetector", "ProviderUnavailableError", "make_session"]
