"""Export stage: ONNX export with in-graph decoding and verification, onnxruntime inference, latency benchmark."""
from .onnx import ExportError, export_onnx
from .ort import OrtDetector, ProviderUnavailableError, make_session

__all__ = ["export_onnx", "ExportError", "OrtDetector", "ProviderUnavailableError", "make_session"]
