"""ONNX export with decoding in the graph, numerical verification against PyTorch, and a json sidecar.

Output layout (all families):
  * ``images``  input, float32 (float16 with ``half``), (batch, 3, H, W), pixel values 0..1, RGB.
  * ``output0`` (batch, boxes, 4 + nc): box centre x, centre y, width, height in input pixels, then the per-class
    scores in 0..1 (objectness already multiplied in for anchor-based heads). Exactly the ``Detector``'s eval
    output, so the evaluator and ``OrtDetector`` treat the file like the PyTorch model.
  * ``detections`` (only with ``nms=True``): (K, 7) rows ``batch_index, x1, y1, x2, y2, class, score`` (pixels),
    from an ONNX ``NonMaxSuppression`` node run per class on ``output0`` (score > ``nms_conf``, IoU
    ``nms_iou``, at most ``max_det`` boxes per class and image). K varies with the input.

Verification: ``onnx.checker``, then onnxruntime on the same random input as PyTorch. fp32 must agree within
``FP32_ATOL + FP32_RTOL * |reference|`` (1e-3 + 1e-5 relative) per element: 1e-3 for the scores, and for
box coordinates in pixels a bound that grows with them (plus 1e-5 of the largest coordinate), because ORT and
PyTorch sum convolutions in different orders (~1e-6 relative in fp32: yolov5n at 640 differs by 1.0e-3 px on
coordinates near 700 px).
``half`` exports (CUDA only) are compared with the fp16 PyTorch output and must agree within
``HALF_ATOL + HALF_RTOL * |reference|`` (0.05 + 1e-2 relative): fp16 keeps ~3 significant digits, so a box
coordinate of 600 px is only representable to 0.5 px.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..eval.profile import profile
from ..io import atomic_path, atomic_write_text
from ..runtime.layouts import DESCRIPTIONS, to_ours
from ..runtime.ort import make_session
from ..versions import versions
from .layouts import LayoutModel, check_layout
# onnx, onnxslim and onnxruntime are imported inside the functions that use them (heavy)

FP32_ATOL = 1e-3
FP32_RTOL = 1e-5
HALF_ATOL = 5e-2
HALF_RTOL = 1e-2
MIN_OPSET = 11  # Resize/upsample as the YOLO necks use it
NMS_MIN_OPSET = 11
INPUT_NAME = "images"
OUTPUT_NAME = "output0"
NMS_OUTPUT_NAME = "detections"


class ExportError(RuntimeError):
    """The model could not be exported or the exported file does not reproduce PyTorch."""


# --------------------------------------------------------------------------------------------------- NMS op
class _OnnxNMS(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` in the graph; torchvision computes the same thing while tracing/verifying.

    boxes (B, N, 4) xyxy, scores (B, C, N) -> selected (K, 3) int64 rows (batch, class, box), ordered per
    image, per class, by descending score (the ONNX operator's order).
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_threshold, score_threshold):
        from torchvision.ops import nms

        rows = []
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                s = scores[b, c]
                cand = torch.nonzero(s > score_threshold).flatten()
                if cand.numel() == 0:
                    continue
                keep = nms(boxes[b, cand].float(), s[cand].float(), float(iou_threshold))[: int(max_per_class)]
                idx = cand[keep]
                rows.append(torch.stack([torch.full_like(idx, b), torch.full_like(idx, c), idx], 1))
        if not rows:
            return torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)
        return torch.cat(rows).to(torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_threshold, score_threshold,
                    center_point_box_i=0)


class EndToEndNMS(nn.Module):
    """Detector + per-class NMS: returns (decoded predictions, detections (K, 7))."""

    def __init__(self, detector: nn.Module, conf: float = 0.25, iou: float = 0.45, max_det: int = 100,
                 layout: str = "ours"):
        super().__init__()
        self.detector = detector
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.layout = layout  # of the detector's output, which is returned as is; NMS reads it as ours

    def forward(self, x):
        out = self.detector(x)
        pred = to_ours(out, self.layout)
        n, nc = pred.shape[1], pred.shape[2] - 4
        xy, wh = pred[..., :2], pred[..., 2:4]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1).float()
        scores = pred[..., 4:].float()
        sel = _OnnxNMS.apply(boxes, scores.transpose(1, 2).contiguous(),
                             torch.tensor([self.max_det], dtype=torch.int64, device=x.device),
                             torch.tensor([self.iou], dtype=torch.float32, device=x.device),
                             torch.tensor([self.conf], dtype=torch.float32, device=x.device))
        bi, ci, ii = sel[:, 0], sel[:, 1], sel[:, 2]
        flat = bi * n + ii
        det_boxes = torch.index_select(boxes.reshape(-1, 4), 0, flat)
        det_scores = torch.index_select(scores.reshape(-1), 0, flat * nc + ci)
        dets = torch.cat([bi.unsqueeze(1).float(), det_boxes, ci.unsqueeze(1).float(), det_scores.unsqueeze(1)], 1)
        return out, dets


# --------------------------------------------------------------------------------------------------- helpers
def architecture_id(det) -> str:
    """'family:hash' of the unpruned base architecture: a pruned model shares it with its parent, so the
    benchmark compares each model with the unpruned model of its own architecture."""
    import hashlib

    spec = getattr(det, "spec", None) or {}
    base = spec.get("base")
    if base is None:
        return f"{getattr(det, 'family', '') or type(det).__name__}:?"
    text = base if isinstance(base, str) else json.dumps(base, sort_keys=True, default=str)
    return f"{spec.get('family', getattr(det, 'family', ''))}:{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _resolve_model(model_or_path, device, weights=None):
    from yolo_prune.models import load

    if isinstance(model_or_path, nn.Module):
        det = model_or_path
        source = getattr(det, "source", None) or f"<in-memory {type(det).__name__}>"
    else:
        source = str(model_or_path) if weights is None else f"{model_or_path} + {weights}"
        det = load(model_or_path, device=device, weights=weights)
    for attr in ("names", "strides"):
        if not hasattr(det, attr):
            raise ExportError(f"{source}: not a yolo_prune Detector (attribute '{attr}' missing); load it with "
                              "yolo_prune.models.load")
    return det, source


def _imgsz_hw(imgsz) -> tuple[int, int]:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    h, w = (tuple(imgsz) * 2)[:2] if len(imgsz) == 1 else tuple(imgsz)
    return int(h), int(w)


@contextlib.contextmanager
def _dynamic_heads(model: nn.Module, dynamic: bool):
    """Heads that cache anchor grids per input shape (ultralytics/yolov5 ``dynamic`` flag) must rebuild them in
    the graph for a dynamic export, or the grid of the tracing shape is frozen in as a constant."""
    saved = []
    if dynamic:
        for m in model.modules():
            if isinstance(getattr(m, "dynamic", None), bool):
                saved.append((m, m.dynamic))
                m.dynamic = True
    try:
        yield
    finally:
        for m, v in saved:
            m.dynamic = v


def _explain_export_failure(e: Exception, source: str, opset: int) -> ExportError:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith((" ", "%", "graph("))]
    headline = next((ln for ln in lines if "Exporting the operator" in ln), lines[-1] if lines else "no message")
    if "Support for this operator was added in version" in str(e):
        return ExportError(f"{source}: opset {opset} is too old for an operator in this model: {headline.rstrip('.')}. "
                           f"Use a newer --opset (17 is the default and well supported by onnxruntime)")
    if "Exporting the operator" in headline:
        return ExportError(f"{source}: the model uses an operator ONNX cannot express: {headline.rstrip('.')}. "
                           "Replace it "
                           "with standard tensor ops in the model's forward")
    return ExportError(f"{source}: torch.onnx could not trace this model ({type(e).__name__}: {headline}). The "
                       "exporter needs a Detector whose eval forward returns one tensor (B, N, 4+nc) built from "
                       "tensor ops only")


@contextlib.contextmanager
def _exporter_output_to_devnull():
    """The TorchScript exporter's C++ side dumps the whole IR graph on stdout when it fails; the exception
    already says what went wrong."""
    streams = []
    for stream in (sys.stdout, sys.stderr):
        try:
            streams.append((stream, stream.fileno()))
        except (AttributeError, OSError, ValueError):  # replaced by an object without a file descriptor
            pass
    saved = []
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream, fd in streams:
            stream.flush()
            saved.append((stream, fd, os.dup(fd)))
            os.dup2(devnull, fd)
        yield
    finally:
        for stream, fd, copy_fd in saved:
            stream.flush()
            os.dup2(copy_fd, fd)
            os.close(copy_fd)
        os.close(devnull)


def diff_stats(ort_out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """max |a - b| and max |a - b| / (|b| + 1e-3) (the 1e-3 keeps near-zero scores from dominating)."""
    a, b = np.asarray(ort_out, np.float64), np.asarray(ref, np.float64)
    if a.size == 0:
        return 0.0, 0.0
    d = np.abs(a - b)
    return float(d.max()), float((d / (np.abs(b) + 1e-3)).max())


def coordinate_mask(shape, layout: str = "ours", detections: bool = False) -> np.ndarray:
    """True where an output element is a box coordinate in pixels (the rest are scores/objectness in 0..1)."""
    mask = np.zeros(shape, dtype=bool)
    if detections:  # (K, 7): batch, x1, y1, x2, y2, class, score
        mask[..., 1:5] = True
    elif layout == "ultralytics":  # (B, 4 + nc, N)
        mask[:, :4] = True
    else:  # ours / yolov5: (B, N, 4 + ...)
        mask[..., :4] = True
    return mask


def _within_tolerance(ort_out, ref, half: bool, coords: np.ndarray | None = None) -> bool:
    """Elementwise ATOL + RTOL·|ref|; box coordinates (``coords`` mask) also get RTOL·(largest coordinate).

    A coordinate is the sum of a grid offset and a decoded delta scaled by the stride, so its summation-order
    noise follows the size of the coordinates, not of each element: a BN-recalibrated, fine-tuned pruned yolov5n
    at 320 differed by 2.9e-3 px somewhere in its 6300 x 4 coordinates (up to ~350 px), which the elementwise
    bound alone refused.
    """
    a, b = np.asarray(ort_out, np.float64), np.asarray(ref, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return False  # inf/nan in either output is never a match worth shipping
    atol, rtol = (HALF_ATOL, HALF_RTOL) if half else (FP32_ATOL, FP32_RTOL)
    bound = atol + rtol * np.abs(b)
    if coords is not None and coords.any():
        bound = bound + rtol * np.abs(b[coords]).max() * coords
    return bool(np.all(np.abs(a - b) <= bound))


def _sorted_dets(d: np.ndarray) -> np.ndarray:
    if len(d) == 0:
        return d.reshape(0, 7)
    order = np.lexsort((-d[:, 6], d[:, 5], d[:, 0]))
    return d[order]


def _metadata(det, hw, batch, dynamic, half, nms, source, layout="ours") -> dict[str, str]:
    return {
        "producer": "yolo_prune",
        "family": str(getattr(det, "family", "")),
        "head_type": str(getattr(det, "head_type", "")),
        "names": json.dumps({str(k): v for k, v in det.names.items()}),
        "nc": str(len(det.names)),
        "strides": json.dumps([int(s) for s in det.strides]),
        "stride": str(max(det.strides) if det.strides else 32),
        "imgsz": json.dumps(None if dynamic else list(hw)),
        "batch": json.dumps(None if dynamic else batch),
        "half": json.dumps(bool(half)),
        "nms": json.dumps(bool(nms)),
        "task": "detect",
        "output0": DESCRIPTIONS[layout],
        "layout": layout,
        "source": source,
    }


def _pin_output_dims(proto, static_shape, channels: int, channel_axis: int = 2) -> None:
    """The tracer leaves known dims symbolic ('Concatoutput0_dim_1'); write the real sizes into the graph."""
    dynamic = [None, None, None]
    dynamic[channel_axis] = channels
    fixed = {OUTPUT_NAME: list(static_shape) if static_shape else dynamic,
             NMS_OUTPUT_NAME: [None, 7]}
    for v in proto.graph.output:
        dims = v.type.tensor_type.shape.dim
        for i, size in enumerate(fixed.get(v.name, [])):
            if size is not None and i < len(dims):
                dims[i].Clear()
                dims[i].dim_value = int(size)


def _io_desc(values) -> list[dict]:
    import onnx

    out = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        out.append({"name": v.name, "shape": shape, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower()})
    return out


# --------------------------------------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportOptions:
    """How ``export_onnx`` exports (``tools/export_onnx.py`` flags in brackets).

    ``imgsz`` (--imgsz): int or (h, w), multiples of the model's largest stride; ``batch`` (--batch);
    ``dynamic`` (--dynamic): dynamic batch, height and width; ``opset`` (--opset); ``half`` (--half): fp16, needs
    ``device="cuda"``: the model is traced in fp16 and verified with onnxruntime's CUDA provider; ``simplify``
    (--simplify): onnxslim; ``nms`` (--nms) with ``nms_conf``, ``nms_iou``, ``max_det`` (--conf, --iou,
    --max-det): the end-to-end ``detections`` output; ``device`` (--device); ``providers``
    (--verify-providers): onnxruntime providers for the verification run (default: the CPU); ``weights``
    (--darknet-weights): darknet ``.weights`` for a ``.cfg`` path (passed to ``yolo_prune.models.load``);
    ``verbose``: print the verification's differences; ``layout`` (--layout): ``output0`` as ours, ultralytics'
    or yolov5's (see ``runtime/layouts.py``; None: the family's own convention).
    """
    imgsz: int | tuple = 640
    batch: int = 1
    dynamic: bool = False
    opset: int = 17
    half: bool = False
    simplify: bool = False
    nms: bool = False
    device: str | torch.device = "cpu"
    nms_conf: float = 0.25
    nms_iou: float = 0.45
    max_det: int = 100
    providers: list | None = None
    weights: str | None = None
    verbose: bool = True
    layout: str | None = None


@dataclass
class _Job:
    """One export's model side: the Detector, its private eval copy and what is traced (layout, NMS)."""
    det: nn.Module
    source: str
    layout: str
    hw: tuple[int, int]
    max_stride: int
    dev: torch.device
    model: nn.Module  # a private fp32 (fp16 with half) eval copy without gradients
    wrapped: nn.Module  # ``model`` in the layout, with the NMS output when asked: what is traced
    prof: dict
    torch_half: bool

    @property
    def channel_axis(self) -> int:
        return 1 if self.layout == "ultralytics" else 2


@dataclass
class _Reference:
    """The PyTorch outputs on the tracing input, the first check of the exported graph."""
    gen: torch.Generator  # seeded; the verification's second input is drawn from it next
    example: torch.Tensor
    example_in: torch.Tensor  # ``example`` in the model's dtype
    outputs: tuple


def export_onnx(model_or_path, out, options: ExportOptions | None = None, **settings) -> dict:
    """Export a Detector (or any file ``yolo_prune.models.load`` reads) to ONNX, verify it, write the sidecar.

    ``options``: an ``ExportOptions``; ``settings``: its fields as keywords (``imgsz=640, batch=1, ...``), which
    override ``options``. ``out`` is written only after verification passed (temp file + rename); its folder is
    created. The layout is verified against PyTorch and recorded in the metadata and the sidecar.
    Returns the report that is also written to ``<out>.json``.
    """
    if options is not None and not isinstance(options, ExportOptions):
        raise TypeError(f"export_onnx: the third argument is an ExportOptions, found {type(options).__name__}; "
                        "pass imgsz, batch, ... as keywords")
    opts = replace(options or ExportOptions(), **settings)
    t0 = time.time()
    out = Path(out)
    dev = _check_request(out, opts)
    job = _prepare(model_or_path, dev, opts)
    ref = _reference(job, opts)
    with atomic_path(out, ".tmp.onnx") as tmp:  # published only once traced, checked and verified
        _trace(job, ref, opts, tmp)
        proto = _finish_graph(job, ref, opts, tmp, out)
        verified = _verify(job, ref, opts, tmp, out)
    report = _report(job, opts, out, proto, verified, t0)
    atomic_write_text(Path(str(out) + ".json"), json.dumps(report, indent=2))
    return report


def _check_request(out: Path, opts: ExportOptions) -> torch.device:
    """The output path and the options that need no model; the device to trace on."""
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"{out}: output path must end in .onnx, found '{out.suffix or out.name}'")
    opset = opts.opset
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: the YOLO necks need Resize from opset {MIN_OPSET}; "
                          f"use --opset {MIN_OPSET} or newer (default 17)")
    max_opset = _max_opset()
    if opset > max_opset:
        raise ExportError(f"opset {opset} is newer than this torch/onnxruntime pair supports (max {max_opset})")
    if opts.nms and opset < NMS_MIN_OPSET:
        raise ExportError(f"--nms needs opset >= {NMS_MIN_OPSET} (NonMaxSuppression), found {opset}")
    if opts.batch < 1:
        raise ExportError(f"batch must be >= 1, found {opts.batch}")
    dev = torch.device(opts.device)
    if opts.half and dev.type != "cuda":
        raise ExportError("--half needs --device cuda: fp16 is traced on the GPU and verified with onnxruntime's "
                          "CUDA provider (neither torch nor onnxruntime's CPU provider run fp16 convolutions "
                          "reliably); on a CPU-only machine export fp32")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExportError(f"--device {opts.device} was requested but torch sees no CUDA device")
    return dev


def _prepare(model_or_path, dev: torch.device, opts: ExportOptions) -> _Job:
    """Load the model, check layout and input size, and build the private copy to trace."""
    det, source = _resolve_model(model_or_path, device=dev, weights=opts.weights)
    try:
        layout = check_layout(opts.layout, det)
    except ValueError as e:
        raise ExportError(f"{source}: {e}") from e
    hw = _imgsz_hw(opts.imgsz)
    max_stride = max(det.strides) if det.strides else 32
    if hw[0] % max_stride or hw[1] % max_stride:
        raise ExportError(f"imgsz {hw[0]}x{hw[1]} must be a multiple of the model's largest stride {max_stride}")

    # export a private copy so the caller's model (dtype, cached grids, training flag) is untouched
    model = copy.deepcopy(det).to(dev).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    prof = profile(model, hw)
    torch_half = opts.half and dev.type == "cuda"
    if torch_half:
        model = model.half()
    core = model if layout == "ours" else LayoutModel(model, layout).eval()
    wrapped = EndToEndNMS(core, opts.nms_conf, opts.nms_iou, opts.max_det, layout).eval() if opts.nms else core
    return _Job(det, source, layout, hw, max_stride, dev, model, wrapped, prof, torch_half)


def _reference(job: _Job, opts: ExportOptions) -> _Reference:
    """PyTorch's outputs on a seeded random input, checked for the (B, N, 4+nc) contract."""
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(opts.batch, 3, *job.hw, generator=gen).to(job.dev)
    example_in = example.half() if job.torch_half else example
    with torch.no_grad(), _dynamic_heads(job.model, opts.dynamic):
        try:
            outputs = job.wrapped(example_in)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{job.source}: the model failed on a {opts.batch}x3x{job.hw[0]}x{job.hw[1]} input: "
                              f"{type(e).__name__}: {e}") from e
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    nc = len(job.det.names)
    ours_ref = to_ours(outputs[0], job.layout) if isinstance(outputs[0], torch.Tensor) else outputs[0]
    if not isinstance(ours_ref, torch.Tensor) or ours_ref.ndim != 3 or ours_ref.shape[-1] != 4 + nc:
        found = type(ours_ref).__name__ if not isinstance(ours_ref, torch.Tensor) else tuple(ours_ref.shape)
        raise ExportError(f"{job.source}: eval forward must return (B, N, 4+nc={4 + nc}), found {found}")
    if job.layout != "ours":  # the layout is a faithful rearrangement of the Detector's own output
        with torch.no_grad():
            direct = job.model(example_in).float()
        if not _within_tolerance(ours_ref.float().cpu().numpy(), direct.cpu().numpy(), opts.half,
                                 coordinate_mask(tuple(direct.shape))):
            a, r = diff_stats(ours_ref.float().cpu().numpy(), direct.cpu().numpy())
            raise ExportError(f"{job.source}: layout {job.layout} read back as ours differs from the Detector's "
                              f"output (max abs {a:.3g}, rel {r:.3g})")
    return _Reference(gen, example, example_in, outputs)


def _trace(job: _Job, ref: _Reference, opts: ExportOptions, tmp: Path) -> None:
    """torch.onnx (TorchScript exporter) into ``tmp``; its failures explained in one line."""
    output_names = [OUTPUT_NAME] + ([NMS_OUTPUT_NAME] if opts.nms else [])
    dynamic_axes = None
    if opts.dynamic:
        dynamic_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                        OUTPUT_NAME: {0: "batch", 3 - job.channel_axis: "boxes"}}
    if opts.nms:
        dynamic_axes = dict(dynamic_axes or {})
        dynamic_axes[NMS_OUTPUT_NAME] = {0: "num_detections"}
    with torch.no_grad(), _dynamic_heads(job.model, opts.dynamic), _quiet_export(), _exporter_output_to_devnull():
        try:
            torch.onnx.export(job.wrapped, (ref.example_in,), str(tmp), dynamo=False, opset_version=opts.opset,
                              input_names=[INPUT_NAME], output_names=output_names, dynamic_axes=dynamic_axes,
                              do_constant_folding=True, external_data=False)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; all mean "cannot export"
            raise _explain_export_failure(e, job.source, opts.opset) from e


def _finish_graph(job: _Job, ref: _Reference, opts: ExportOptions, tmp: Path, out: Path):
    """The traced graph checked, simplified, output dims pinned and metadata added, saved back to ``tmp``."""
    import onnx

    proto = onnx.load(str(tmp))
    if INPUT_NAME not in [i.name for i in proto.graph.input]:
        raise ExportError(f"{job.source}: the traced graph does not depend on its input: the forward leaves torch "
                          "(numpy, .item(), .tolist() round trips) so the tracer froze the outputs into "
                          "constants; keep the whole eval forward in tensor ops")
    if opts.simplify:
        proto = _slim(proto, job.source)
    out0 = ref.outputs[0]
    _pin_output_dims(proto, None if opts.dynamic else tuple(out0.shape), int(out0.shape[job.channel_axis]),
                     job.channel_axis)
    meta = _metadata(job.det, job.hw, opts.batch, opts.dynamic, opts.half, opts.nms, job.source, job.layout)
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "yolo_prune"
    onnx.save(proto, str(tmp))
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{out}: onnx.checker rejected the exported graph: {e}") from e
    return proto


def _verify(job: _Job, ref: _Reference, opts: ExportOptions, tmp: Path, out: Path) -> dict:
    """onnxruntime against PyTorch on the tracing input and a second one; raises ExportError beyond tolerance."""
    session = make_session(tmp, providers=opts.providers or (["cuda"] if job.torch_half else ["cpu"]))
    # a second, unseen input catches values the tracer froze into constants (numpy/.item() round trips);
    # with dynamic axes it also gets another batch and size, so frozen grids or shapes show up too
    hw, s = job.hw, job.max_stride
    shape2 = (opts.batch + 1, 3, hw[0] + s, hw[1] + 2 * s) if opts.dynamic else (opts.batch, 3, *hw)
    ex2 = torch.rand(*shape2, generator=ref.gen).to(job.dev)
    with torch.no_grad(), _dynamic_heads(job.model, opts.dynamic):
        r2 = job.wrapped(ex2.half() if job.torch_half else ex2)
    checks = [(ref.example, ref.outputs), (ex2, r2 if isinstance(r2, tuple) else (r2,))]
    max_abs = max_rel = 0.0
    nms_counts = []
    for ex, refs in checks:
        got = _run_session(session, ex, opts.half, out)
        a, r = _compare_output0(got[0], refs[0], tuple(ex.shape), opts.half, job.layout, out)
        max_abs, max_rel = max(max_abs, a), max(max_rel, r)
        if opts.nms:
            nms_counts.append(_compare_detections(got[1], refs[1], tuple(ex.shape), opts.half, out))
    if opts.verbose:
        print(f"max abs diff {max_abs:.3g}")
        print(f"max rel diff {max_rel:.3g}")
    return {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "shapes": [list(ex.shape) for ex, _ in checks],
            "providers": session.get_providers(), "nms_detections": nms_counts}


def _run_session(session, ex: torch.Tensor, half: bool, out: Path) -> list:
    try:
        return session.run(None, {INPUT_NAME: ex.cpu().numpy().astype(np.float16 if half else np.float32)})
    except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
        raise ExportError(f"{out}: onnxruntime failed to run the exported graph on an input of shape "
                          f"{tuple(ex.shape)}: {e}") from e


def _compare_output0(got: np.ndarray, ref: torch.Tensor, shape: tuple, half: bool, layout: str,
                     out: Path) -> tuple[float, float]:
    """(max abs, max rel) difference of ``output0``; ExportError on another shape or beyond tolerance."""
    ref0 = ref.float().cpu().numpy()
    if got.shape != ref0.shape:
        raise ExportError(f"{out}: onnxruntime output shape {got.shape} differs from PyTorch "
                          f"{ref0.shape} for input {shape}")
    a, r = diff_stats(got, ref0)
    if not _within_tolerance(got, ref0, half, coordinate_mask(ref0.shape, layout)):
        raise ExportError(_tolerance_message(out, a, r, half, shape))
    return a, r


def _compare_detections(got: np.ndarray, ref: torch.Tensor, shape: tuple, half: bool, out: Path) -> int:
    """The end-to-end NMS rows must be the same boxes as PyTorch's; returns how many onnxruntime kept."""
    g, rd = _sorted_dets(got), _sorted_dets(ref.float().cpu().numpy())
    if g.shape != rd.shape:
        raise ExportError(f"{out}: end-to-end NMS kept {len(g)} boxes in onnxruntime but {len(rd)} "
                          f"in PyTorch for input {shape}")
    if len(g) and not _within_tolerance(g, rd, half, coordinate_mask(rd.shape, detections=True)):
        a, r = diff_stats(g, rd)
        raise ExportError(_tolerance_message(out, a, r, half, shape, "detections"))
    return int(len(g))


def _report(job: _Job, opts: ExportOptions, out: Path, proto, verified: dict, t0: float) -> dict:
    """The sidecar ``<out>.json``: what was exported, how, and how well onnxruntime reproduced PyTorch."""
    det, half, nms = job.det, opts.half, opts.nms
    return {
        "format": "yolo_prune-onnx",
        "onnx": out.name,
        "source": job.source,
        "family": getattr(det, "family", ""),
        "head_type": getattr(det, "head_type", ""),
        "architecture": architecture_id(det),
        "names": {str(k): v for k, v in det.names.items()},
        "nc": len(det.names),
        "strides": [int(s) for s in det.strides],
        "inputs": _io_desc(proto.graph.input),
        "outputs": _io_desc(proto.graph.output),
        "output_layout": job.layout,
        "layout": {OUTPUT_NAME: DESCRIPTIONS[job.layout],
                   **({NMS_OUTPUT_NAME: "(K, 7): batch_index, x1, y1, x2, y2, class, score; per-class NMS"}
                      if nms else {})},
        "opset": opts.opset,
        "imgsz": list(job.hw),
        "batch": opts.batch,
        "dynamic": opts.dynamic,
        "half": half,
        "simplify": opts.simplify,
        "nms": {"conf": opts.nms_conf, "iou": opts.nms_iou, "max_det_per_class": opts.max_det} if nms else None,
        "params": job.prof["params"],
        "macs": job.prof["macs"],
        "gflops": job.prof["gflops"],
        "file_bytes": out.stat().st_size,
        "verify": {"max_abs_diff": verified["max_abs_diff"], "max_rel_diff": verified["max_rel_diff"],
                   "tolerance": (f"|d| <= {HALF_ATOL} + {HALF_RTOL}*|ref| (fp16 vs fp16 PyTorch)" if half
                                 else f"|d| <= {FP32_ATOL} + {FP32_RTOL}*|ref| (+ {FP32_RTOL}*max|coordinate| "
                                      "on box coordinates)"),
                   "shapes": verified["shapes"], "providers": verified["providers"],
                   **({"nms_detections": verified["nms_detections"]} if nms else {})},
        "versions": _versions(),
        "seconds": round(time.time() - t0, 2),
    }


def _tolerance_message(out, a, r, half, shape, what=OUTPUT_NAME) -> str:
    bound = f"{HALF_ATOL} + {HALF_RTOL}*|ref|" if half else f"{FP32_ATOL} + {FP32_RTOL}*|ref|"
    return (f"{out}: onnxruntime '{what}' differs from PyTorch beyond tolerance for input {shape}: max abs diff "
            f"{a:.3g}, max rel diff {r:.3g} (allowed {bound}, box coordinates also the relative share of the "
            f"largest coordinate). The file was not written; the graph does not "
            "reproduce the model (an op exported with different semantics, or overflow in fp16)")


def _slim(proto, source):
    import onnxslim

    try:
        return onnxslim.slim(proto)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{source}: onnxslim failed to simplify the graph: {e}") from e


def _max_opset() -> int:
    import onnxruntime as ort

    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as torch_max
    except ImportError:  # pragma: no cover - older/newer torch
        torch_max = 20
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import get_max_opset  # type: ignore
        ort_max = int(get_max_opset())
    except Exception:  # noqa: BLE001 - not exposed by every build
        ort_max = 21 if tuple(int(x) for x in ort.__version__.split(".")[:2]) >= (1, 18) else 19
    return min(torch_max, ort_max)


@contextlib.contextmanager
def _quiet_export():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def _versions() -> dict:
    return versions(("torch", "onnx", "onnxruntime", "yolo_prune"))
