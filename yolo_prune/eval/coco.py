"""COCO mAP with pycocotools on top of the one inference path (``infer.py``)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.coco import category_map, list_images, load_data_yaml, yolo_to_coco
from ..io import atomic_write_json
from ..runtime.host import cpu_threads, torch_threads
from .infer import Timer, make_loader, prepare_model, run_inference
# pycocotools is imported inside the functions that use it (heavy, not needed to import yolo_prune)

STAT_NAMES = (
    "AP@[.50:.95] all", "AP@.50 all", "AP@.75 all", "AP@[.50:.95] small", "AP@[.50:.95] medium",
    "AP@[.50:.95] large", "AR@[.50:.95] all maxDets=1", "AR@[.50:.95] all maxDets=10",
    "AR@[.50:.95] all maxDets=100", "AR@[.50:.95] small", "AR@[.50:.95] medium", "AR@[.50:.95] large",
)


MAX_JSON_BYTES = 2 * 1024 ** 3  # COCO train2017's instances json is 450 MB


def _read_ann(ann, label: str = "annotations") -> tuple[dict, str]:
    if isinstance(ann, dict):
        return ann, label
    p = Path(ann)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: COCO annotation json not found. Supply instances_*.json via --ann, or a "
                                "YOLO data yaml via --data")
    if p.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{p}: {p.stat().st_size:,} bytes is larger than any COCO annotation json "
                         f"(limit {MAX_JSON_BYTES:,})")
    try:
        data = json.loads(p.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: expected UTF-8 json, found an undecodable byte at offset {e.start}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid json ({e})") from None
    except RecursionError:
        raise ValueError(f"{p}: json nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits (Python's int conversion limit)
        raise ValueError(f"{p}: not valid json ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{p}: expected a COCO json with an 'images' list, found {found}"[:300])
    return data, str(p)


def _is_id(v) -> bool:
    # pycocotools and our category table keep ids in int64 arrays: a larger id would crash them (OverflowError)
    return isinstance(v, int) and not isinstance(v, bool) and -2 ** 63 <= v < 2 ** 63


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_annotations(gt: dict, source: str) -> dict:
    """Validate a COCO detection json (the checks the training label parser makes, in COCO terms) and return a
    copy pycocotools can score: ids are integers and unique, boxes four finite numbers with x, y >= 0 and
    w, h > 0, every annotation names a listed image (and a listed category when categories are given). A missing
    ``iscrowd`` defaults to 0, a missing ``area`` to w*h, a missing annotation ``id`` to its position."""
    image_ids = set()
    for i, im in enumerate(gt["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            found = sorted(map(str, im)) if isinstance(im, dict) else type(im).__name__
            raise ValueError(f"{source}: images[{i}] expected fields 'id' and 'file_name', found {found}"[:300])
        if not _is_id(im["id"]):
            raise ValueError(f"{source}: images[{i}].id expected a 64-bit integer, found {im['id']!r}"[:200])
        if not isinstance(im["file_name"], str):
            raise ValueError(f"{source}: images[{i}].file_name expected a string, found {im['file_name']!r}"[:200])
        if im["id"] in image_ids:
            raise ValueError(f"{source}: images[{i}].id {im['id']} is a duplicate of an earlier image's id")
        image_ids.add(im["id"])
    cats = gt.get("categories")
    cat_ids = None
    if cats is not None:
        if not isinstance(cats, list):
            raise ValueError(f"{source}: 'categories' expected a list, found {type(cats).__name__}")
        cat_ids = set()
        for i, c in enumerate(cats):
            if not isinstance(c, dict) or not _is_id(c.get("id")) or not isinstance(c.get("name", ""), str):
                raise ValueError(f"{source}: categories[{i}] expected {{'id': 64-bit integer, 'name': string}}, found "
                                 f"{c!r}"[:300])
            if c["id"] in cat_ids:
                raise ValueError(f"{source}: categories[{i}].id {c['id']} is a duplicate")
            cat_ids.add(c["id"])
        if not cat_ids:
            cat_ids = None
    anns = gt.get("annotations", [])
    if not isinstance(anns, list):
        raise ValueError(f"{source}: 'annotations' expected a list, found {type(anns).__name__}")
    checked, ann_ids = [], set()
    for i, a in enumerate(anns):
        where = f"{source}: annotations[{i}]"
        if not isinstance(a, dict):
            raise ValueError(f"{where} expected a mapping, found {type(a).__name__}")
        for key in ("image_id", "category_id", "bbox"):
            if key not in a:
                raise ValueError(f"{where} field '{key}' is missing (found {sorted(map(str, a))})"[:300])
        for key in ("image_id", "category_id"):
            if not _is_id(a[key]):
                raise ValueError(f"{where}.{key} expected a 64-bit integer, found {a[key]!r}"[:200])
        box = a["bbox"]
        if not isinstance(box, list) or len(box) != 4:
            raise ValueError(f"{where}.bbox expected [x, y, w, h], found {box}"[:200])
        if not all(_is_number(v) for v in box):
            raise ValueError(f"{where}.bbox expected four finite numbers, found {box}"[:200])
        if box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
            raise ValueError(f"{where}.bbox expected x, y >= 0 and w, h > 0, found {box}"[:200])
        if a["image_id"] not in image_ids:
            raise ValueError(f"{where}.image_id {a['image_id']} is not the id of any listed image")
        if cat_ids is not None and a["category_id"] not in cat_ids:
            raise ValueError(f"{where}.category_id {a['category_id']} is not a listed category id")
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            raise ValueError(f"{where}.iscrowd expected 0 or 1, found {crowd!r}"[:200])
        area = a.get("area", box[2] * box[3])
        if not _is_number(area) or area < 0:
            raise ValueError(f"{where}.area expected a finite number >= 0, found {area!r}"[:200])
        ann_id = a.get("id", i + 1)
        if not _is_id(ann_id) or ann_id in ann_ids:
            raise ValueError(f"{where}.id expected a unique 64-bit integer, found {ann_id!r}"[:200])
        ann_ids.add(ann_id)
        checked.append({**a, "iscrowd": int(crowd), "area": area, "id": ann_id})
    return {**gt, "annotations": checked}


def select_subset(n: int, max_images: int | None) -> list[int]:
    """Deterministic, evenly spread subset of ``max_images`` indices out of ``n`` (all when None)."""
    if max_images is None or max_images >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, max(1, int(max_images)))})


def _coco_results(dets_by_image: list[tuple[int, torch.Tensor]], class_to_cat: dict) -> list[dict]:
    """COCO results format (bbox x, y, w, h rounded to 3 decimals, score to 5, as yolov5 val writes them)."""
    results = []
    lut = np.full(max(class_to_cat, default=0) + 1, -1, dtype=np.int64)
    for k, v in class_to_cat.items():
        lut[k] = v
    for img_id, det in dets_by_image:
        if not len(det):
            continue
        d = det.numpy().astype(np.float64)
        cls = d[:, 5].astype(np.int64)
        cats = np.where(cls < len(lut), lut[np.minimum(cls, len(lut) - 1)], -1)
        xywh = np.stack([d[:, 0], d[:, 1], d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]], 1).round(3)
        scores = d[:, 4].round(5)
        for box, s, c in zip(xywh.tolist(), scores.tolist(), cats.tolist()):
            if c >= 0:
                results.append({"image_id": img_id, "category_id": c, "bbox": box, "score": s})
    return results


def coco_stats(gt: dict, predictions: list[dict], image_ids: list, verbose: bool = True) -> list[float]:
    """The 12 pycocotools bbox numbers for ``image_ids``. Only ``summarize`` prints (when verbose)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": gt["images"], "categories": copy.deepcopy(gt["categories"]),
                           "annotations": _as_result_anns(predictions)}
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
    if verbose:
        ev.summarize()
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            ev.summarize()
    return [float(v) for v in ev.stats]


def _as_result_anns(predictions: list[dict]) -> list[dict]:
    """What COCO.loadRes does for bbox results, without its prints or its failure on an empty list."""
    anns = []
    for i, p in enumerate(predictions, 1):
        x, y, w, h = p["bbox"]
        anns.append({**p, "id": i, "area": w * h, "iscrowd": 0,
                     "segmentation": [[x, y, x, y + h, x + w, y + h, x + w, y]]})
    return anns


def _ground_truth(images, ann, data, max_images, verbose: bool) -> tuple:
    """(images, checked COCO ground truth, its name in messages) from images + ann, or a data yaml's val split."""
    if data is not None:
        d = load_data_yaml(data, splits=("val",))
        if ann is None:
            # convert only what will be scored: per-epoch validation on a subset stays cheap on big val sets
            files = list_images(images if images is not None else d["val"], field=None if images else "val")
            images = [files[i] for i in select_subset(len(files), max_images)]
            ann = yolo_to_coco(images, d["names"], verbose=verbose)
        elif images is None:
            images = d["val"]
    if images is None or ann is None:
        raise ValueError("evaluate: supply images= (folder) and ann= (COCO json), or data= (YOLO data yaml)")
    gt, source = _read_ann(ann, f"{data} (val labels as COCO json)" if data is not None else "annotations")
    gt = _check_annotations(gt, source)
    gt.setdefault("info", {})
    return images, gt, source


def _listed_images(images, gt: dict, source: str, max_images) -> tuple:
    """[(path, json image)] of the files the json lists (an even subset of ``max_images``), and the others."""
    paths = list_images(images)
    by_name = {Path(im["file_name"]).name: im for im in gt["images"]}
    listed = [(p, by_name[p.name]) for p in paths if p.name in by_name]
    if not listed:
        raise ValueError(f"{source}: none of the {len(paths)} images in {images} is listed in its 'images' "
                         f"(matched by file name; e.g. {paths[0].name!r} vs {gt['images'][0]['file_name']!r})"
                         if gt["images"] else f"{source}: its 'images' list is empty")
    skipped = [(str(p), "not listed in the annotation json") for p in paths if p.name not in by_name]
    if skipped:
        warnings.warn(f"{len(skipped)} image(s) in {images} are not listed in {source} and are not scored, "
                      f"e.g. {Path(skipped[0][0]).name}")
    return [listed[i] for i in select_subset(len(listed), max_images)], skipped


def evaluate(model, images=None, ann=None, data=None, imgsz: int = 640, batch: int = 16, device="cpu",
             conf: float = 0.001, iou: float = 0.6, max_det: int = 300, out=None, max_images: int | None = None,
             verbose: bool = True, multi_label: bool = True, threads: int | None = None) -> dict:
    """Score ``model`` on COCO-format ground truth with pycocotools (yolov5 val pipeline).

    model: Detector, callable returning (B, N, 4 + nc) with ``.names``, a model path (.pt/.yaml/.cfg/.weights)
    or a .onnx path. Ground truth: ``images`` folder + ``ann`` COCO json, or ``data`` YOLO data yaml (its val
    labels are converted on the fly; ``ann`` overrides). ``max_images`` scores an evenly spread, deterministic
    subset. Writes ``out``/predictions.json and ``out``/metrics.json when ``out`` is given.

    Returns {"mAP50-95", "mAP50", "stats" (12 pycocotools numbers), "speed_ms" {preprocess, inference, nms} per
    image, "images" (scored), "predictions" (count), "skipped" [(file, reason)]}.
    """
    t_start = time.perf_counter()
    images, gt, source = _ground_truth(images, ann, data, max_images, verbose)
    listed, skipped = _listed_images(images, gt, source, max_images)

    model = prepare_model(model, device)
    class_to_cat = _class_to_category(model, gt, source)

    # batch shapes come from the files' headers (EXIF-rotated, as cv2 decodes them), like yolov5's loader
    loader, fixed = make_loader(model, [p for p, _ in listed], imgsz, batch, pad=0.5)
    rect, size, batch = loader.rect, loader.imgsz, loader.batch
    id_of = {str(p): im["id"] for p, im in listed}

    timer = Timer()
    dets_by_image = []
    with torch_threads(threads):
        for ps, dets in run_inference(model, loader, device, conf, iou, max_det, multi_label=multi_label,
                                      timer=timer, progress=verbose, fixed_batch=fixed):
            dets_by_image.extend((id_of[str(p)], d) for p, d in zip(ps, dets))
    skipped += loader.skipped
    for p, reason in loader.skipped:
        warnings.warn(f"image left out of the evaluation: {reason}")
    truncated = list(getattr(loader, "truncated", []))
    if truncated:
        warnings.warn(f"{len(truncated)} truncated JPEG(s) were decoded with their missing part filled in and "
                      f"scored as they are, e.g. {truncated[0]}")
    scored_ids = [i for i, _ in dets_by_image]
    if not scored_ids:
        raise ValueError(f"{images}: no readable image to evaluate ({len(skipped)} skipped: {skipped[:3]})")

    predictions = _coco_results(dets_by_image, class_to_cat)
    n_gt = sum(1 for a in gt["annotations"] if a["image_id"] in set(scored_ids))
    if n_gt == 0:
        warnings.warn(f"{source}: the {len(scored_ids)} evaluated images have no ground-truth boxes; "
                      "mAP is reported as 0")
    stats = coco_stats(gt, predictions, scored_ids, verbose=verbose)
    result = {
        "mAP50-95": max(stats[0], 0.0), "mAP50": max(stats[1], 0.0), "stats": stats,
        "stat_names": list(STAT_NAMES), "speed_ms": timer.per_image_ms(), "images": len(scored_ids),
        "ground_truth_boxes": n_gt, "predictions": len(predictions), "skipped": skipped,
        "truncated_images": truncated,
        "settings": {"imgsz": size, "batch": batch, "conf": conf, "iou": iou, "max_det": max_det,
                     "multi_label": multi_label, "rect": rect, "device": str(device),
                     "threads": threads or cpu_threads()},
        "seconds": time.perf_counter() - t_start,
    }
    if out is not None:
        out = Path(out)
        atomic_write_json(out / "predictions.json", predictions, indent=None)
        atomic_write_json(out / "metrics.json", result, indent=None)
    if verbose:
        _print_result(result)
    return result


def _class_to_category(model, gt: dict, source: str) -> dict:
    """{model class: json category id}; a json without categories gets them, named after the model's classes."""
    names = dict(getattr(model, "names", {}) or {})
    if not names:
        raise ValueError("model: no class names (.names) to map to the json's categories")
    cat_ids = {a["category_id"] for a in gt["annotations"]}
    class_to_cat = category_map(names, gt.get("categories"), cat_ids, source=source)
    if not gt.get("categories"):  # pycocotools scores only listed categories; name them after the model
        inv = {v: names[k] for k, v in class_to_cat.items()}
        gt["categories"] = [{"id": i, "name": inv.get(i, str(i))} for i in sorted(cat_ids | set(inv))]
    return class_to_cat


def _print_result(result: dict) -> None:
    """The mAP, speed and left-out lines ``evaluate`` prints when verbose."""
    sp, settings = result["speed_ms"], result["settings"]
    print(f"mAP50-95 {result['mAP50-95']:.4f}\nmAP50 {result['mAP50']:.4f}")
    print(f"Speed: {sp['preprocess']:.1f} ms pre-process, {sp['inference']:.1f} ms inference, "
          f"{sp['nms']:.1f} ms NMS per image at {settings['imgsz']} ({result['images']} images, "
          f"batch {settings['batch']})")
    truncated, skipped = result["truncated_images"], result["skipped"]
    if truncated or skipped:
        print(f"Images: {len(truncated)} truncated JPEG(s) scored as decoded, {len(skipped)} left out")

