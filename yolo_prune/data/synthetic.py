"""A synthetic shapes dataset: small, deterministic from a seed, and learnable in a few CPU minutes.

Each image holds 1-5 solid or outlined shapes (circle, square, triangle, ... one class per shape kind) of random
colour, size (6-60 % of the image side), rotation and position on a textured, noisy background. Shapes may overlap
partly; a shape hidden behind a later one by more than ~half its box is not placed.

Output (YOLO and COCO at once)::

    out_dir/images/{train,val}/000001.jpg
    out_dir/labels/{train,val}/000001.txt          class cx cy w h (normalised)
    out_dir/annotations/instances_{train,val}.json   category ids 1..nc, image_id = the number in the file name
    out_dir/data.yaml                               path, train, val, nc, names
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..io import atomic_dir

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "pentagon")


def _seed_for(seed: int, split: str, index: int) -> np.random.Generator:
    # every image has its own stream, so image k is the same whatever n_train / n_val are
    return np.random.default_rng([int(seed), {"train": 1, "val": 2}[split], int(index)])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency colour blobs + fine noise + a few random lines: texture without shape-like structure."""
    coarse = rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(40, 215, 3).astype(np.float32)
    img = 0.5 * img + 0.5 * base
    for _ in range(int(rng.integers(0, 6))):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.line(img, p1, p2, colour, 1, cv2.LINE_AA)
    img += rng.normal(0, rng.uniform(4, 14), img.shape).astype(np.float32)
    return img


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices (k, 2) of a shape of circumradius r; circles are drawn separately."""
    if kind == "square":
        k, radii = 4, [r]
        angle += math.pi / 4
    elif kind == "diamond":
        # a rhombus: long and short axes differ, so it is not a rotated square
        pts = [(0, -r), (0.55 * r, 0), (0, r), (-0.55 * r, 0)]
        return _rotate(np.array(pts, dtype=np.float64), angle) + (cx, cy)
    elif kind == "triangle":
        k, radii = 3, [r]
    elif kind == "pentagon":
        k, radii = 5, [r]
    elif kind == "hexagon":
        k, radii = 6, [r]
    elif kind == "star":
        k, radii = 10, [r, 0.45 * r]
    elif kind == "cross":
        a, b = r, 0.33 * r
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b),
               (-b, -b)]
        return _rotate(np.array(pts, dtype=np.float64), angle) + (cx, cy)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    t = angle + np.arange(k) * 2 * math.pi / k - math.pi / 2
    rad = np.array([radii[i % len(radii)] for i in range(k)])
    return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _box_iou_with(box, others) -> float:
    """Largest share of ``box``'s area covered by any of ``others`` (xyxy)."""
    worst = 0.0
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    for o in others:
        iw = max(0.0, min(box[2], o[2]) - max(box[0], o[0]))
        ih = max(0.0, min(box[3], o[3]) - max(box[1], o[1]))
        o_area = max((o[2] - o[0]) * (o[3] - o[1]), 1e-9)
        worst = max(worst, iw * ih / area, iw * ih / o_area)
    return worst


def render_image(rng: np.random.Generator, size: int, nc: int) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One BGR uint8 image and its objects as (class, [x1, y1, x2, y2]) in pixels."""
    img = _background(rng, size)
    objects: list[tuple[int, list[float]]] = []
    n_target = int(rng.integers(1, 6))
    for _ in range(n_target * 4):  # a few tries per object for a placement that keeps labels visible
        if len(objects) == n_target:
            break
        cls = int(rng.integers(0, nc))
        kind = SHAPES[cls]
        side = rng.uniform(0.06, 0.60) * size  # box side, 6-60 % of the image
        r = side / 2
        cx, cy = rng.uniform(r, size - r, 2)
        angle = rng.uniform(0, 2 * math.pi) if kind not in {"circle"} else 0.0
        if kind == "circle":
            rx = r
            pts = None
            box = [cx - rx, cy - rx, cx + rx, cy + rx]
        else:
            pts = _polygon(kind, cx, cy, r, angle)
            box = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
        box = [float(np.clip(v, 0, size)) for v in box]
        if box[2] - box[0] < 3 or box[3] - box[1] < 3:
            continue
        if _box_iou_with(box, [b for _, b in objects]) > 0.45:
            continue
        # colour far enough from the local background so the shape is visible
        x1, y1, x2, y2 = (int(v) for v in box)
        local = img[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)].reshape(-1, 3).mean(0)
        colour = rng.uniform(0, 255, 3)
        for _try in range(8):
            if np.abs(colour - local).sum() > 180:
                break
            colour = rng.uniform(0, 255, 3)
        colour = tuple(float(v) for v in colour)
        outlined = rng.random() < 0.35
        thickness = max(1, int(round(side * rng.uniform(0.06, 0.12)))) if outlined else cv2.FILLED
        shift = 4  # sub-pixel precision for antialiased drawing
        if kind == "circle":
            cv2.circle(img, (int(cx * 16), int(cy * 16)), int(r * 16), colour, thickness, cv2.LINE_AA, shift)
        else:
            p = np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)
            if outlined:
                cv2.polylines(img, [p], True, colour, thickness, cv2.LINE_AA, shift)
            else:
                cv2.fillPoly(img, [p], colour, cv2.LINE_AA, shift)
        objects.append((cls, box))
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return img, objects


def make_synthetic(out_dir, n_train: int = 512, n_val: int = 128, imgsz: int = 160, nc: int = 3, seed: int = 0,
                   overwrite: bool = False) -> Path:
    """Write the synthetic dataset to ``out_dir`` and return the path of its ``data.yaml``.

    Deterministic: the same (seed, imgsz, nc) gives byte-identical files. An existing dataset with the same
    parameters is reused (its ``synthetic.json`` records them); different parameters need ``overwrite=True``.
    """
    if not 1 <= nc <= len(SHAPES):
        raise ValueError(f"make_synthetic: nc expected 1..{len(SHAPES)} (shapes {', '.join(SHAPES)}), found {nc}")
    if n_train < 1 or n_val < 1:
        raise ValueError(f"make_synthetic: n_train and n_val must be >= 1, found {n_train} and {n_val}")
    if imgsz < 32:
        raise ValueError(f"make_synthetic: imgsz expected >= 32, found {imgsz}")
    out = Path(out_dir)
    params = {"n_train": n_train, "n_val": n_val, "imgsz": imgsz, "nc": nc, "seed": seed, "version": 1}
    stamp = out / "synthetic.json"
    if stamp.is_file():
        if json.loads(stamp.read_text()) == params and (out / "data.yaml").is_file():
            return out / "data.yaml"
        if not overwrite:
            raise FileExistsError(f"{out}: holds a synthetic dataset made with {stamp.read_text().strip()}, not "
                                  f"{json.dumps(params)}; pass overwrite=True or choose another folder")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder exists and is not a synthetic dataset; choose an empty folder")

    # build everything in a sibling temp folder, then swap it in: never a half-written dataset
    with atomic_dir(out) as tmp:
        names = {i: SHAPES[i] for i in range(nc)}
        for split, n in (("train", n_train), ("val", n_val)):
            _write_split(tmp, split, n, imgsz, nc, seed, names)
        data = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "nc": nc, "names": names}
        (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        (tmp / "synthetic.json").write_text(json.dumps(params))
    return out / "data.yaml"


def _write_split(root: Path, split: str, n: int, size: int, nc: int, seed: int, names: dict) -> None:
    img_dir, lbl_dir, ann_dir = root / "images" / split, root / "labels" / split, root / "annotations"
    for d in (img_dir, lbl_dir, ann_dir):
        d.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k in range(1, n + 1):
        img, objects = render_image(_seed_for(seed, split, k), size, nc)
        stem = f"{k:06d}"
        if not cv2.imwrite(str(img_dir / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"could not write {img_dir / f'{stem}.jpg'}")
        lines = []
        for cls, (x1, y1, x2, y2) in objects:
            w, h = x2 - x1, y2 - y1
            lines.append(f"{cls} {(x1 + w / 2) / size:.6f} {(y1 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": cls + 1,
                                "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                                "area": round(w * h, 2), "iscrowd": 0})
        (lbl_dir / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        images.append({"id": k, "file_name": f"{stem}.jpg", "width": size, "height": size})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": names[i], "supercategory": "shape"} for i in range(nc)]}
    (ann_dir / f"instances_{split}.json").write_text(json.dumps(coco))
