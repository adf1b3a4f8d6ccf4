"""One inference path for every model: cv2 letterbox -> batched forward -> class-aware NMS -> original coords.

The preprocessing follows the yolov5/ultralytics validation loader: the long side is resized to ``imgsz``
(INTER_AREA when shrinking), images are sorted by aspect ratio and each batch is letterboxed (colour 114,
centred) to one rectangle padded to a stride multiple (``pad=0.5`` as yolov5 val), or to a square ``imgsz``.
The model is any callable returning decoded predictions (B, N, 4 + nc): cx, cy, w, h in input pixels, then
class scores in 0..1.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from torch import nn

from ..data.coco import image_size
from ..io import atomic_write
from ..layers import kept_modes
from ..runtime.host import cpu_threads, torch_threads
from ..runtime.ort import OrtDetector


def resize_long_side(img: np.ndarray, imgsz: int) -> np.ndarray:
    """Resize so the long side is ``imgsz`` (yolov5 load_image: INTER_AREA to shrink, INTER_LINEAR to grow).

    Sides round up (math.ceil), as current yolov5: with int() the coco128 mAP50-95 drops 0.3442 -> 0.3435.
    """
    h0, w0 = img.shape[:2]
    r = imgsz / max(h0, w0)
    if r == 1:
        return img
    interp = cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA
    return cv2.resize(img, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=interp)


def letterbox(img: np.ndarray, new_shape, color=(114, 114, 114), auto: bool = False, scaleup: bool = True,
              stride: int = 32):
    """Resize keeping the aspect ratio and pad to ``new_shape`` (h, w) or an int square; yolov5 semantics.

    auto=True pads only to the next stride multiple. Returns (image, ratio, (pad_w, pad_h)) where the pads
    are the (fractional) left/top offsets of the image inside the canvas.
    """
    shape = img.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if shape[::-1] != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, (r, r), (dw, dh)


def rect_batch_shapes(sizes_wh: np.ndarray, imgsz: int, batch: int, stride: int, pad: float = 0.5):
    """yolov5 rectangular batches: order (by h/w), and per-batch canvas (h, w) multiples of ``stride``."""
    sizes_wh = np.asarray(sizes_wh, dtype=np.float64).reshape(-1, 2)
    ar = sizes_wh[:, 1] / sizes_wh[:, 0]
    order = ar.argsort()
    ar = ar[order]
    nb = math.ceil(len(ar) / batch)
    shapes = []
    for i in range(nb):
        ari = ar[i * batch:(i + 1) * batch]
        lo, hi = ari.min(), ari.max()
        shapes.append([hi, 1] if hi < 1 else [1, 1 / lo] if lo > 1 else [1, 1])
    canvas = np.ceil(np.array(shapes) * imgsz / stride + pad).astype(int) * stride
    return order, [tuple(int(v) for v in s) for s in canvas]


@dataclass
class Batch:
    """A letterboxed batch: ``images`` uint8 (B, 3, H, W) RGB (channels_last strides); per image original (h, w),
    gain and (pad_w, pad_h)."""
    paths: list
    images: torch.Tensor
    orig_hw: torch.Tensor  # (B, 2) float
    gain: torch.Tensor  # (B,)
    pad: torch.Tensor  # (B, 2) left, top
    skipped: list = field(default_factory=list)


def read_image(path) -> np.ndarray:
    """BGR uint8 (H, W, 3); grayscale, 16-bit and alpha images are converted. ValueError if unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: cv2 could not decode this image (corrupt or unsupported format)")
    return img


def is_truncated_jpeg(path) -> bool:
    """A JPEG whose data does not end with the EOI marker: decoders fill the missing rows silently (grey)."""
    if Path(path).suffix.lower() not in (".jpg", ".jpeg"):
        return False
    try:
        with open(path, "rb") as f:
            f.seek(-2, os.SEEK_END)
            tail = f.read(2)
    except OSError:
        return False
    return tail != b"\xff\xd9"


class LetterboxLoader:
    """Batches of letterboxed images in yolov5-val order.

    rect=True: images sorted by aspect ratio, one stride-padded rectangle per batch (yolov5 val, pad 0.5).
    rect=False: every image letterboxed into a square ``imgsz`` canvas (or ``canvas`` (h, w)), in the given order.
    ``sizes`` (w, h) per path may be given to skip reading headers; unreadable files are listed in
    ``self.skipped`` as (path, reason) and left out.
    """

    def __init__(self, paths, imgsz: int = 640, batch: int = 16, stride: int = 32, rect: bool = True,
                 pad: float = 0.5, sizes=None, workers: int | None = None, canvas: tuple[int, int] | None = None):
        if imgsz % stride:
            new = math.ceil(imgsz / stride) * stride
            warnings.warn(f"imgsz {imgsz} is not a multiple of the model stride {stride}; using {new}")
            imgsz = new
        self.imgsz, self.batch, self.stride, self.rect, self.pad = imgsz, max(1, int(batch)), stride, rect, pad
        self.skipped: list[tuple[str, str]] = []
        self.truncated: list[str] = []  # decoded, but the file ends early (counted and reported)
        paths = [Path(p) for p in paths]
        good, wh = [], []
        for i, p in enumerate(paths):
            try:
                wh.append(sizes[i] if sizes is not None else image_size(p))
                good.append(p)
                if is_truncated_jpeg(p):
                    self.truncated.append(str(p))
            except ValueError as e:
                self.skipped.append((str(p), str(e)))
        if rect and good:
            order, self.shapes = rect_batch_shapes(np.array(wh), imgsz, self.batch, stride, pad)
            good = [good[i] for i in order]
        else:
            self.shapes = [tuple(canvas or (imgsz, imgsz))] * math.ceil(len(good) / self.batch)
        self.paths = good
        self.workers = workers or min(4, max(1, cpu_threads()))

    def __len__(self):
        return len(self.shapes)

    def _load(self, path, shape):
        img = read_image(path)
        h0, w0 = img.shape[:2]
        img = resize_long_side(img, self.imgsz)
        h, w = img.shape[:2]
        img, _, pad = letterbox(img, shape, auto=False, scaleup=False, stride=self.stride)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (h0, w0), h / h0, pad

    def __iter__(self):
        with ThreadPoolExecutor(self.workers) as pool:
            for bi, shape in enumerate(self.shapes):
                paths = self.paths[bi * self.batch:(bi + 1) * self.batch]
                loaded, kept, skipped = [], [], []
                for p, res in zip(paths, pool.map(self._safe_load, paths, [shape] * len(paths))):
                    if isinstance(res, str):
                        skipped.append((str(p), res))
                    else:
                        loaded.append(res)
                        kept.append(p)
                self.skipped.extend(skipped)
                if not loaded:
                    continue
                # (B, H, W, 3) RGB viewed as (B, 3, H, W): a channels_last tensor without a copy
                images = torch.from_numpy(np.stack([r[0] for r in loaded])).permute(0, 3, 1, 2)
                yield Batch(kept, images,
                            torch.tensor([r[1] for r in loaded], dtype=torch.float32),
                            torch.tensor([r[2] for r in loaded], dtype=torch.float32),
                            torch.tensor([r[3] for r in loaded], dtype=torch.float32), skipped)

    def _safe_load(self, path, shape):
        try:
            return self._load(path, shape)
        except ValueError as e:
            return str(e)


def xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x)
    half = x[..., 2:4] / 2
    y[..., :2] = x[..., :2] - half
    y[..., 2:4] = x[..., :2] + half
    return y


def _rank_within(group: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-order ``order`` (already sorted by score) so each group is contiguous; return it and ranks inside groups."""
    order = order[torch.sort(group[order], stable=True).indices]
    g = group[order]
    if g.numel() == 0:
        return order, g
    starts = torch.ones_like(g, dtype=torch.bool)
    starts[1:] = g[1:] != g[:-1]
    first = torch.cummax(torch.where(starts, torch.arange(len(g), device=g.device), 0), 0).values
    return order, torch.arange(len(g), device=g.device) - first


def grouped_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float,
                small: int = 1000) -> torch.Tensor:
    """NMS that never suppresses across groups; indices kept, by decreasing score (torchvision batched_nms result).

    Up to ``small`` boxes this is ``torchvision.ops.batched_nms`` (one kernel, coordinate offsets). Above it,
    torchvision scans the whole candidate list once per group (torch.where per class: O(boxes x groups), 5-20x
    slower on a 16-image batch at conf 0.001), so the candidates are sorted by group once and each contiguous
    segment goes through ``torchvision.ops.nms``; the result is the same set of boxes.
    """
    if boxes.shape[0] <= small:
        return torchvision.ops.batched_nms(boxes, scores, groups, iou)
    order = torch.argsort(groups, stable=True)
    counts = torch.unique_consecutive(groups[order], return_counts=True)[1]
    # contiguous per-group slices (views, no per-group indexing); nms returns indices local to each slice
    kept = [torchvision.ops.nms(b, s, iou) for b, s in zip(boxes[order].split(counts.tolist()),
                                                          scores[order].split(counts.tolist()))]
    starts = torch.cumsum(counts, 0) - counts
    lens = torch.tensor([len(k) for k in kept], device=boxes.device)
    keep = order[torch.cat(kept) + torch.repeat_interleave(starts, lens)]
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


def non_max_suppression(pred: torch.Tensor, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                        agnostic: bool = False, multi_label: bool = False, max_nms: int = 30000,
                        classes=None) -> list[torch.Tensor]:
    """Class-aware NMS over a whole batch at once (groups = image x class, or image when ``agnostic``).

    pred: (B, N, 4 + nc) with cx, cy, w, h and class scores. multi_label keeps every class score > conf of a box
    (yolov5 val); otherwise only the best class. ``max_nms`` caps the candidates per image (highest first),
    ``max_det`` the detections per image. Returns B tensors (n, 6): x1, y1, x2, y2, score, class.
    """
    out, b = _nms_flat(pred, conf, iou, max_det, agnostic, multi_label, max_nms, classes)
    return list(out.split(torch.bincount(b, minlength=pred.shape[0]).tolist()))


def _nms_flat(pred, conf, iou, max_det, agnostic=False, multi_label=False, max_nms=30000, classes=None):
    """non_max_suppression's work: all detections of the batch as one (n, 6) tensor plus their image index,
    grouped by image in order."""
    if pred.ndim != 3 or pred.shape[-1] < 5:
        raise ValueError(f"predictions: expected shape (B, N, 4 + nc), found {tuple(pred.shape)}")
    bs, nc = pred.shape[0], pred.shape[-1] - 4
    scores = pred[..., 4:]
    if multi_label and nc > 1:
        b, a, c = (scores > conf).nonzero(as_tuple=True)
        s = scores[b, a, c]
    else:
        s, c = scores.max(-1)
        b, a = (s > conf).nonzero(as_tuple=True)
        s, c = s[b, a], c[b, a]
    if classes is not None:
        keep = torch.isin(c, torch.as_tensor(classes, device=c.device))
        b, a, c, s = b[keep], a[keep], c[keep], s[keep]
    boxes = xywh2xyxy(pred[b, a, :4]).float()
    s = s.float()
    if s.numel() and torch.bincount(b, minlength=bs).max() > max_nms:
        order, rank = _rank_within(b, torch.argsort(s, descending=True, stable=True))
        keep = order[rank < max_nms]
        b, c, s, boxes = b[keep], c[keep], s[keep], boxes[keep]
    groups = b if agnostic else b * nc + c
    keep = grouped_nms(boxes, s, groups, iou)  # sorted by score, descending
    keep, rank = _rank_within(b, keep)
    keep = keep[rank < max_det]
    return torch.cat([boxes[keep], s[keep, None], c[keep, None].float()], 1), b[keep]


def scale_back(det: torch.Tensor, gain, pad, orig_hw) -> torch.Tensor:
    """Letterboxed xyxy -> original image xyxy on a copy, clipped to the image.

    gain, pad (left, top) and orig_hw (h, w) are one image's values or per-row tensors (n,), (n, 2), (n, 2).
    """
    det = det.clone()
    gain = torch.as_tensor(gain, dtype=det.dtype).reshape(-1, 1)
    pad = torch.as_tensor(pad, dtype=det.dtype).reshape(-1, 2).repeat(1, 2)
    wh = torch.as_tensor(orig_hw, dtype=det.dtype).reshape(-1, 2).flip(1).repeat(1, 2)
    det[:, :4] = ((det[:, :4] - pad) / gain).clamp(min=0).minimum(wh)
    return det


def fuse_conv_bn(model: nn.Module, example: torch.Tensor | None = None, rtol: float = 1e-3,
                 channels_last: bool = False) -> nn.Module:
    """A copy of ``model`` with BatchNorm folded into the preceding conv, for inference.

    Folds modules holding ``conv`` (Conv2d) and ``bn`` (BatchNorm2d) attributes (yolov5/ultralytics Conv) and
    Conv2d->BatchNorm2d pairs in nn.Sequential. ``channels_last`` also stores the weights NHWC (oneDNN's fast
    layout on CPU) and sets ``model.channels_last``. When ``example`` is given the copy is checked against the
    original; any disagreement returns the plain copy (with a warning) rather than wrong numbers.
    """
    original = model
    model = copy.deepcopy(model).eval()
    fused = 0
    for m in list(model.modules()):
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            m.conv, m.bn = _fuse(conv, bn), nn.Identity()
            fused += 1
        elif isinstance(m, nn.Sequential):
            keys = list(m._modules)
            for k1, k2 in zip(keys, keys[1:]):
                c, n = m._modules[k1], m._modules[k2]
                if isinstance(c, nn.Conv2d) and isinstance(n, nn.BatchNorm2d) and n.track_running_stats:
                    m._modules[k1], m._modules[k2] = _fuse(c, n), nn.Identity()
                    fused += 1
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    if not (fused or channels_last) or example is None:
        return model
    with torch.inference_mode():
        with kept_modes(original):
            original.eval()
            ref = _first(original(example)).float()
        try:
            x = example.contiguous(memory_format=torch.channels_last) if channels_last else example
            got = _first(model(x)).float()
            ok = got.shape == ref.shape and torch.allclose(got, ref, rtol=rtol,
                                                            atol=rtol * float(ref.abs().max().clamp(min=1.0)))
        except RuntimeError:  # e.g. a .view() in a head that needs contiguous NCHW
            ok = False
    if not ok:
        warnings.warn("conv+BN folding / channels_last changed this model's outputs; using a plain copy")
        return copy.deepcopy(original).eval()
    return model


def _fuse(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """torch's conv+BN folding; a CompensatedConv2d's border term is added before the BN, so it is scaled too."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = fuse_conv_bn_eval(conv, bn)
    if isinstance(getattr(fused, "compensation", None), torch.Tensor):
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
            1 / torch.sqrt(bn.running_var + bn.eps)
        fused.compensation = fused.compensation * scale.view(-1, 1, 1, 1).to(fused.compensation.dtype)
    return fused


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def model_stride(model) -> int:
    strides = getattr(model, "strides", None) or getattr(model, "stride", None)
    if isinstance(strides, torch.Tensor):
        strides = strides.tolist()
    if isinstance(strides, (list, tuple)) and strides:
        return int(max(strides))
    return int(strides) if isinstance(strides, (int, float)) else 32


def prepare_model(model, device="cpu", fuse: bool = True):
    """Load paths (.pt/.yaml/.cfg/.weights/.onnx), move torch models to ``device``, eval mode, BN folded."""
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if p.suffix.lower() == ".onnx":
            if not p.is_file():
                raise FileNotFoundError(f"{p}: ONNX model not found. Supply an exported .onnx file at this path")
            return OrtDetector(str(p), providers=None)
        from ..models import load
        model = load(p, device=device)
    if isinstance(model, nn.Module):
        model = model.to(device)
        if fuse:
            s = model_stride(model)
            example = torch.rand(1, 3, 2 * s, 2 * s, device=device)
            model = fuse_conv_bn(model, example, channels_last=True)
        else:
            model = copy.deepcopy(model)
        model.eval()
    elif not callable(model):
        raise TypeError(f"model: expected a Detector, a model path or a callable, found {type(model).__name__}")
    return model


@dataclass
class Timer:
    """Accumulated seconds per stage."""
    preprocess: float = 0.0
    inference: float = 0.0
    nms: float = 0.0
    images: int = 0

    def per_image_ms(self) -> dict:
        n = max(self.images, 1)
        return {"preprocess": 1000 * self.preprocess / n, "inference": 1000 * self.inference / n,
                "nms": 1000 * self.nms / n}


def _sync(device):
    if isinstance(device, torch.device) and device.type == "cuda":
        torch.cuda.synchronize(device)


def run_inference(model, loader: LetterboxLoader, device="cpu", conf: float = 0.25, iou: float = 0.45,
                  max_det: int = 300, agnostic: bool = False, multi_label: bool = False, timer: Timer | None = None,
                  progress: bool = False, fixed_batch: int | None = None):
    """Yield (paths, detections) per batch; detections are (n, 6) tensors in original-image xyxy on the CPU.

    ``model`` must already be prepared (``prepare_model``). ``fixed_batch`` pads each batch with blank
    images for models exported with a static batch size.
    """
    timer = timer if timer is not None else Timer()
    is_torch = isinstance(model, nn.Module)
    dev = torch.device(device) if is_torch else torch.device("cpu")
    it = iter(loader)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(loader.paths), desc="inference", unit="img")
    with torch.inference_mode():
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            fmt = torch.channels_last if getattr(model, "channels_last", False) else torch.contiguous_format
            x = batch.images.to(dev, non_blocking=True).float().div_(255).contiguous(memory_format=fmt)
            n = x.shape[0]
            if fixed_batch and n < fixed_batch:
                x = torch.cat([x, x.new_zeros((fixed_batch - n, *x.shape[1:]))])
            _sync(dev)
            t1 = time.perf_counter()
            pred = _first(model(x))[:n]
            _sync(dev)
            t2 = time.perf_counter()
            # many small ops: one thread avoids waking the pool for each (2-4x faster on 2 shared cores)
            with torch_threads(1) if dev.type == "cpu" else contextlib.nullcontext():
                flat, img = _nms_flat(pred, conf, iou, max_det, agnostic, multi_label)
                flat, img = flat.cpu(), img.cpu()
                flat = scale_back(flat, batch.gain[img], batch.pad[img], batch.orig_hw[img])
            dets = list(flat.split(torch.bincount(img, minlength=n).tolist()))
            t3 = time.perf_counter()
            timer.preprocess += t1 - t0
            timer.inference += t2 - t1
            timer.nms += t3 - t2
            timer.images += n
            if bar is not None:
                bar.update(n + len(batch.skipped))
            yield batch.paths, dets
    if bar is not None:
        bar.close()


def make_loader(model, paths, imgsz: int, batch: int, pad: float = 0.5) -> tuple[LetterboxLoader, int | None]:
    """The loader for ``model``: rect batches, or the fixed canvas and batch of a statically exported ONNX model.

    Returns (loader, fixed batch or None).
    """
    static_hw = getattr(model, "imgsz", None)
    fixed = getattr(model, "batch", None)
    if fixed is not None:
        batch = int(fixed)
    if static_hw is not None:
        h, w = (static_hw, static_hw) if isinstance(static_hw, int) else (int(static_hw[0]), int(static_hw[1]))
        if max(h, w) != imgsz:
            warnings.warn(f"model has a static {h}x{w} input; imgsz {imgsz} is replaced by {max(h, w)}")
        return LetterboxLoader(paths, max(h, w), batch, model_stride(model), rect=False, canvas=(h, w)), fixed
    return LetterboxLoader(paths, imgsz, batch, model_stride(model), rect=True, pad=pad), fixed


def predict(model, source, imgsz: int = 640, batch: int = 1, device="cpu", conf: float = 0.25, iou: float = 0.45,
            max_det: int = 300, agnostic: bool = False, threads: int | None = None) -> tuple[dict, dict]:
    """Detect on every image of ``source`` (file, folder, .txt list, list of paths).

    Returns ({path: (n, 6) tensor x1, y1, x2, y2, score, class in original pixels}, names). Each image gets
    its own minimal stride-padded rectangle when batch == 1 (as ultralytics predict). Unreadable images are
    skipped with a warning.
    """
    from ..data.coco import list_images

    paths = list_images(source)
    model = prepare_model(model, device)
    loader, fixed = make_loader(model, paths, imgsz, batch, pad=0.0)
    results = {}
    with torch_threads(threads):
        for ps, dets in run_inference(model, loader, device, conf, iou, max_det, agnostic, fixed_batch=fixed):
            results.update({str(p): d for p, d in zip(ps, dets)})
    for p, reason in loader.skipped:
        warnings.warn(f"skipping {p}: {reason}")
    return results, dict(getattr(model, "names", {}) or {})


def class_color(c: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per class."""
    rng = np.random.default_rng(int(c) * 7919 + 17)
    return tuple(int(v) for v in rng.integers(64, 256, 3))


def draw_detections(img: np.ndarray, det: torch.Tensor, names: dict) -> np.ndarray:
    """Boxes and 'name score' labels drawn with cv2's built-in Hershey font (no font files needed)."""
    img = img.copy()
    lw = max(1, round(sum(img.shape[:2]) / 600))
    for x1, y1, x2, y2, score, cls in det.tolist():
        color = class_color(int(cls))
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(img, p1, p2, color, lw, cv2.LINE_AA)
        label = f"{names.get(int(cls), int(cls))} {score:.2f}"
        fs = lw / 3
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, max(lw - 1, 1))
        above = p1[1] - th - 3 >= 0
        q = (p1[0] + tw, p1[1] - th - 3 if above else p1[1] + th + 3)
        cv2.rectangle(img, p1, q, color, -1, cv2.LINE_AA)
        cv2.putText(img, label, (p1[0], p1[1] - 2 if above else p1[1] + th + 2), cv2.FONT_HERSHEY_SIMPLEX, fs,
                    (0, 0, 0), max(lw - 1, 1), cv2.LINE_AA)
    return img


def predict_to_images(model, source, out, imgsz: int = 640, device="cpu", conf: float = 0.25, iou: float = 0.45,
                      max_det: int = 300, agnostic: bool = False) -> list[tuple[Path, int]]:
    """Run ``predict`` and write each image with its boxes drawn to ``out``; returns [(written file, boxes)]."""
    results, names = predict(model, source, imgsz, 1, device, conf, iou, max_det, agnostic)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, det in results.items():
        img = draw_detections(read_image(path), det, names)
        dst = out / Path(path).name
        ext = dst.suffix if dst.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else ".png"
        dst = dst.with_suffix(ext)

        def write(tmp, dst=dst, img=img):
            if not cv2.imwrite(tmp, img):
                raise OSError(f"{dst}: cv2 could not write the image (check the folder is writable)")

        atomic_write(dst, write, suffix=f".tmp{ext}")
        written.append((dst, len(det)))
    return written

