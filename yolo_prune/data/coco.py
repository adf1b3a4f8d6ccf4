"""YOLO-format labels <-> COCO json, data-yaml reading, and model-class -> COCO category mapping."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..io import atomic_write_json
from .images import image_size  # noqa: F401  (re-exported)
from .labels import parse_labels

from .sources import list_images, load_data_yaml  # noqa: F401  (re-exported)

COCO80_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

# Standard COCO table: 80 contiguous class indices -> the 91-id space of the official annotations.
COCO80_TO_91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)




def label_path_for(image: str | os.PathLike) -> Path:
    """yolov5/ultralytics rule: .../images/.../x.jpg -> .../labels/.../x.txt (last 'images' folder)."""
    parts = list(Path(image).parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_yolo_labels(path: str | os.PathLike, nc: int | None = None, problems: list | None = None) -> np.ndarray:
    """Rows (class, xc, yc, w, h), normalised. Polygon rows (class x1 y1 x2 y2 ...) become their bounding box.

    A missing file means an image without objects. Lines are checked by the same rules as for training
    (``labels.py``: NaN/inf, class range, negative, > 1, zero size, duplicates); rejected lines are skipped and
    appended to ``problems`` as "file:line: reason" (or, without a ``problems`` list, raise ValueError).
    """
    path = Path(path)
    if not path.is_file():
        return np.zeros((0, 5), dtype=np.float64)
    rows, why = parse_labels(path, nc)
    if why:
        found = [f"{path}:{w[5:].split(':', 1)[0]}:{w.split(':', 1)[1]}" if w.startswith("line ") else f"{path}: {w}"
                 for w in why]
        if problems is None:
            raise ValueError(f"{found[0]}" + (f" (and {len(found) - 1} more bad lines)" if len(found) > 1 else ""))
        problems.extend(found)
    return rows.astype(np.float64).reshape(-1, 5)


def _names_dict(names, source: str) -> dict[int, str]:
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (list, tuple)):
        return {i: str(v) for i, v in enumerate(names)}
    raise ValueError(f"{source}: field 'names' expected a list or a {{index: name}} mapping, found "
                     f"{type(names).__name__}")


def image_ids_for(images: list[Path]) -> list[int]:
    """COCO image ids: the integer in the file name when every stem is a distinct integer, else 1..N."""
    stems = [p.stem for p in images]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(images) + 1))


def yolo_to_coco(images, names, labels: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                 verbose: bool = False) -> dict:
    """Convert YOLO-format labels to a COCO detection json (dict; also written to ``out`` if given).

    images: folder / list file / list of image paths. labels: folder holding ``<stem>.txt`` (default: the
    images->labels rule). Image sizes are read from the files. Category ids are class index + 1, with names.
    Unreadable images are left out with a warning; images without a label file have no annotations.
    """
    names = _names_dict(names, "names")
    files = list_images(images)
    coco = {"info": {"description": "converted from YOLO labels by yolo_prune"}, "images": [], "annotations": [],
            "categories": [{"id": i + 1, "name": n, "supercategory": ""} for i, n in sorted(names.items())]}
    ids = image_ids_for(files)
    skipped = []
    iterator = files
    if verbose:
        from tqdm import tqdm
        iterator = tqdm(files, desc="yolo->coco", unit="img")
    ann_id = 1
    bad_lines: list[str] = []
    for f, img_id in zip(iterator, ids):
        try:
            w, h = image_size(f)
        except ValueError as e:
            skipped.append(str(e))
            continue
        coco["images"].append({"id": img_id, "file_name": Path(f).name, "width": w, "height": h})
        lbl = Path(labels) / f"{Path(f).stem}.txt" if labels is not None else label_path_for(f)
        for cls, xc, yc, bw, bh in read_yolo_labels(lbl, nc=len(names), problems=bad_lines):
            x0, y0 = max((xc - bw / 2) * w, 0.0), max((yc - bh / 2) * h, 0.0)
            x1, y1 = min((xc + bw / 2) * w, w), min((yc + bh / 2) * h, h)
            box = [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)]
            coco["annotations"].append({"id": ann_id, "image_id": img_id, "category_id": int(cls) + 1,
                                        "bbox": box, "area": round((x1 - x0) * (y1 - y0), 3), "iscrowd": 0})
            ann_id += 1
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable image(s) left out of the COCO json: " + "; ".join(skipped[:5]))
    if bad_lines:  # the training parser's rules: the same lines are skipped in training and in evaluation
        warnings.warn(f"{len(bad_lines)} bad label line(s) skipped: " + "; ".join(bad_lines[:5]))
    coco["info"]["skipped_label_lines"] = len(bad_lines)
    if out is not None:
        atomic_write_json(out, coco, indent=None)
    return coco


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


def category_map(model_names: dict, categories: list | None, ann_category_ids=(), source: str = "annotations"
                 ) -> dict[int, int]:
    """Model class index -> json category id.

    1. By name (case and '_' vs ' ' ignored): every json category must be one of the model's classes. Model
       classes the json lacks are dropped (their detections are not scored), with a warning.
    2. Fallback: the standard COCO 80->91 table, when the model's names are COCO's 80 and every json id lies in
       1..90 (e.g. a json without ``categories``).
    Anything else raises ValueError saying what was expected and found.
    """
    model_names = _names_dict(model_names, "model names")
    cats = list(categories or [])
    by_name = {_norm(c["name"]): int(c["id"]) for c in cats if "name" in c and "id" in c}
    if by_name:
        wanted = {_norm(n): i for i, n in model_names.items()}
        missing = sorted(n for n in by_name if n not in wanted)
        if not missing:
            mapping = {i: by_name[_norm(n)] for i, n in model_names.items() if _norm(n) in by_name}
            dropped = [n for n in model_names.values() if _norm(n) not in by_name]
            if dropped:
                warnings.warn(f"{source}: {len(dropped)} model class(es) are not categories of the json and are "
                              f"not scored: {dropped[:10]}")
            return mapping
    ids = {int(c["id"]) for c in cats if "id" in c} | {int(i) for i in ann_category_ids}
    is_coco80 = tuple(_norm(model_names.get(i, "")) for i in range(len(model_names))) == COCO80_NAMES
    if is_coco80 and ids and all(1 <= i <= 90 for i in ids):
        if by_name:
            warnings.warn(f"{source}: category names differ from COCO's; using the standard COCO 80->91 id table")
        return {i: COCO80_TO_91[i] for i in range(80)}
    found = [c.get("name") for c in cats][:12] if cats else f"no 'categories', annotation ids {sorted(ids)[:12]}"
    raise ValueError(
        f"{source}: cannot map the model's {len(model_names)} classes to the json's "
        f"{len(cats) if cats else len(ids)} categories. Expected every json category name among the model's "
        f"names {list(model_names.values())[:12]}{' ...' if len(model_names) > 12 else ''}"
        f"{'' if by_name else ' (or a COCO-80 model with json ids in 1..90)'}; found {found}"
        f"{'; not in the model: ' + str(missing[:12]) if by_name else ''}")


def convert_yolo_dataset(out, data=None, split: str = "val", images=None, labels=None, names=None) -> dict:
    """yolo2coco entry point: from a data yaml split, or from an image folder plus class names; writes ``out``."""
    if data is not None:
        d = load_data_yaml(data, splits=(split,))
        return yolo_to_coco(d[split], d["names"], labels=labels, out=out, verbose=True)
    if images is None or not names:
        raise ValueError("yolo2coco: supply data= (a YOLO data yaml), or images= together with names=")
    return yolo_to_coco(images, names, labels=labels, out=out, verbose=True)
