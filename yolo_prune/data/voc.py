"""Pascal VOC datasets (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/*.txt``) -> a YOLO dataset.

``convert_voc`` writes ``out/images/<split>/`` (links to, or copies of, the VOC images), ``out/labels/<split>/``
(YOLO txt), ``out/annotations/instances_<split>.json`` (COCO, for pycocotools), ``out/data.yaml`` and
``out/voc_report.json`` (every box that was dropped or changed, per file). ``voc_data_yaml`` does the same into
a deterministic cache folder, so ``--data VOC_ROOT`` works wherever a data yaml does.

Every file is hostile input: XML is parsed with DOCTYPE and ENTITY declarations refused (no entity expansion, no
external entities), each file's size and object count is bounded, and image ids from the split files must be
plain file names (no path separators), so nothing outside the VOC root is ever read.

Box rules (each case is counted and listed in the report, never kept silently):
  * VOC coordinates are 1-based pixel indices: a box xmin..xmax covers pixel edges xmin - 1 .. xmax.
  * xmin > xmax or ymin > ymax: "inverted box", dropped. xmin == xmax or ymin == ymax: "zero area", dropped.
  * a box reaching more than 1 px outside the image is clipped to it ("clipped"); a box with nothing left inside
    is dropped ("outside the image"). One pixel of slack is allowed for 0-based writers.
  * an unknown class (not in ``names``) or a missing name / bndbox / non-numeric coordinate: dropped.
  * ``difficult`` objects are dropped by default (the VOC / yolov5 convention), kept with ``difficult="keep"``.
  * missing or wrong ``<size>``: the image file's own size is used (read from its header) and the file is listed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from xml.parsers import expat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..io import atomic_dir
from .images import IMG_SUFFIXES, image_size

VERSION = 1  # bump when the conversion's output changes: cached conversions are then redone
MAX_XML_BYTES = 1 << 20  # 1 MiB per annotation file (a VOC file with 50 objects is ~10 KB)
MAX_OBJECTS = 5000  # objects per annotation file
MAX_SPLIT_BYTES = 64 << 20  # an ImageSets/Main/<split>.txt file
MAX_IMAGES = 2_000_000  # ids per split
MAX_NAME_CHARS = 200  # class names
_ID_RE = re.compile(r"^[^/\\\x00]{1,255}$")


class VocError(ValueError):
    """A VOC folder or file that cannot be converted (the message names the file and what was found)."""


# ------------------------------------------------------------------------------------------------- XML reading
def _refuse(kind: str, path: Path):
    def handler(*_args):
        raise VocError(f"{path}: XML {kind} declarations are refused (entity expansion / external entities); "
                       "a VOC annotation needs none")
    return handler


def parse_xml_safe(path: Path) -> ET.Element:
    """Parse one XML file with DOCTYPE / ENTITY declarations refused and its size bounded."""
    size = path.stat().st_size
    if size > MAX_XML_BYTES:
        raise VocError(f"{path}: {size} bytes, more than the {MAX_XML_BYTES} a VOC annotation may have")
    data = path.read_bytes()
    # a first pass with a bare expat parser refuses any DOCTYPE before its internal subset is read: without a DTD
    # there are no entities beyond the five predefined ones, so the ElementTree parse below expands nothing
    check = expat.ParserCreate()
    check.StartDoctypeDeclHandler = _refuse("DOCTYPE", path)
    check.EntityDeclHandler = _refuse("ENTITY", path)
    check.UnparsedEntityDeclHandler = _refuse("ENTITY", path)
    check.ExternalEntityRefHandler = _refuse("external entity", path)
    try:
        check.Parse(data, True)
        return ET.fromstring(data)
    except (expat.ExpatError, ET.ParseError) as e:
        raise VocError(f"{path}: not well-formed XML ({e})") from None


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text is not None else None


def _number(node: ET.Element | None, tag: str) -> float | None:
    s = _text(node, tag)
    try:
        v = float(s) if s is not None else None
    except ValueError:
        return None
    return v if v is not None and v == v and abs(v) < 1e9 else None  # NaN / absurd values count as missing


@dataclass
class VocObject:
    name: str | None
    difficult: bool
    box: tuple[float, float, float, float] | None  # xmin, ymin, xmax, ymax as written (1-based), None = unusable


@dataclass
class VocAnnotation:
    path: Path
    width: int | None
    height: int | None
    objects: list[VocObject] = field(default_factory=list)


def read_annotation(path: Path) -> VocAnnotation:
    root = parse_xml_safe(path)
    if root.tag != "annotation":
        raise VocError(f"{path}: root element expected <annotation>, found <{root.tag}>")
    size = root.find("size")
    w, h = _number(size, "width"), _number(size, "height")
    ann = VocAnnotation(path, int(w) if w and w >= 1 else None, int(h) if h and h >= 1 else None)
    objects = root.findall("object")
    if len(objects) > MAX_OBJECTS:
        raise VocError(f"{path}: {len(objects)} objects, more than the {MAX_OBJECTS} allowed per image")
    for obj in objects:
        name = _text(obj, "name")
        if name is not None and not 0 < len(name) <= MAX_NAME_CHARS:
            name = None
        bb = obj.find("bndbox")
        coords = [_number(bb, k) for k in ("xmin", "ymin", "xmax", "ymax")]
        box = tuple(coords) if bb is not None and all(c is not None for c in coords) else None
        ann.objects.append(VocObject(name, _text(obj, "difficult") == "1", box))
    return ann


# ------------------------------------------------------------------------------------------------- folder layout
def is_voc_root(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "Annotations").is_dir() and (p / "ImageSets" / "Main").is_dir()


def _check_root(root: Path) -> None:
    if not is_voc_root(root):
        raise VocError(f"{root}: not a VOC folder (expected Annotations/, JPEGImages/ and ImageSets/Main/<split>.txt)")


def available_splits(root) -> list[str]:
    main = Path(root) / "ImageSets" / "Main"
    # class-specific lists (aeroplane_train.txt) hold "id flag" pairs; only the plain split lists are splits
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)


def default_splits(root) -> tuple[str, str]:
    """(train, val): trainval/test when a test list exists (VOC2007, BCCD), else train/val (VOC2012)."""
    have = set(available_splits(root))
    if "test" in have:
        return ("trainval" if "trainval" in have else "train"), "test"
    return "train", "val"


def read_split(root: Path, split: str) -> list[str]:
    p = root / "ImageSets" / "Main" / f"{split}.txt"
    if not p.is_file():
        raise VocError(f"{p}: split list not found (available: {', '.join(available_splits(root)) or 'none'})")
    if p.stat().st_size > MAX_SPLIT_BYTES:
        raise VocError(f"{p}: more than {MAX_SPLIT_BYTES} bytes; not a VOC split list")
    ids = []
    for n, line in enumerate(p.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if not _ID_RE.match(parts[0]) or parts[0] in (".", "..") or parts[0].startswith("."):
            raise VocError(f"{p}: line {n}: image id expected a plain file name, found {parts[0][:80]!r}")
        ids.append(parts[0])
    if len(ids) > MAX_IMAGES:
        raise VocError(f"{p}: {len(ids)} ids, more than the {MAX_IMAGES} allowed")
    if not ids:
        raise VocError(f"{p}: split list is empty")
    return list(dict.fromkeys(ids))  # a repeated id is one image


def _image_file(root: Path, image_id: str) -> Path | None:
    folder = root / "JPEGImages"
    for suffix in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", *IMG_SUFFIXES):
        f = folder / f"{image_id}{suffix}"
        if f.is_file():
            return f
    return None


def class_names(annotations: list[VocAnnotation], difficult: str = "skip") -> list[str]:
    """Every class name used by a usable object, sorted (a stable order for any file order)."""
    return sorted({o.name for a in annotations for o in a.objects
                   if o.name is not None and o.box is not None and (difficult == "keep" or not o.difficult)})


# ------------------------------------------------------------------------------------------------- conversion
def _boxes(ann: VocAnnotation, w: int, h: int, cls_of: dict, difficult: str, problems: list, counts: Counter):
    """YOLO rows (cls, cx, cy, bw, bh normalised) and COCO boxes [x, y, w, h] (pixels) of the usable objects."""
    rows = []
    for k, o in enumerate(ann.objects, 1):
        label = f"object {k} ({o.name})" if o.name else f"object {k}"
        if o.name is None:
            reason, detail = "missing class name", ""
        elif o.box is None:
            reason, detail = "missing or non-numeric bndbox", ""
        elif o.difficult and difficult != "keep":
            reason, detail = "difficult", ""
        elif o.name not in cls_of:
            reason, detail = "unknown class", f" {o.name!r}"
        else:
            reason = detail = None
        if reason is None:
            xmin, ymin, xmax, ymax = o.box
            if xmin > xmax or ymin > ymax:
                reason, detail = "inverted box", f" (xmin {xmin:g} xmax {xmax:g}, ymin {ymin:g} ymax {ymax:g})"
            elif xmin == xmax or ymin == ymax:
                reason, detail = "zero area", f" (xmin {xmin:g} xmax {xmax:g}, ymin {ymin:g} ymax {ymax:g})"
        if reason is not None:
            counts[reason] += 1
            problems.append(f"{label}: {reason}{detail}, dropped")
            continue
        x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax  # 1-based pixel indices -> pixel edges
        if x0 < -1 or y0 < -1 or x1 > w + 1 or y1 > h + 1:
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if cx1 <= cx0 or cy1 <= cy0:
                counts["outside the image"] += 1
                problems.append(f"{label}: outside the {w}x{h} image ({xmin:g},{ymin:g})-({xmax:g},{ymax:g}), "
                                "dropped")
                continue
            counts["clipped"] += 1
            problems.append(f"{label}: reaches outside the {w}x{h} image ({xmin:g},{ymin:g})-({xmax:g},{ymax:g}), "
                            "clipped")
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        counts["kept"] += 1
        rows.append((cls_of[o.name], x0, y0, x1, y1))
    return rows


def _place_image(src: Path, dst: Path, mode: str) -> None:
    if mode == "copy":
        shutil.copyfile(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def _convert_split(root, split, ids, anns, cls_of, difficult, out, mode, report, counts):

    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    coco = {"info": {"description": f"converted from VOC {root} ({split}) by yolo_prune"}, "images": [],
            "annotations": [], "categories": [{"id": i + 1, "name": n, "supercategory": ""}
                                              for n, i in sorted(cls_of.items(), key=lambda x: x[1])]}
    n_images = n_boxes = 0
    for img_id, (image_id, ann) in enumerate(zip(ids, anns), 1):
        problems = []
        img = _image_file(root, image_id)
        key = f"Annotations/{image_id}.xml"
        if img is None:
            counts["image missing"] += 1
            report.setdefault(key, []).append(f"no JPEGImages/{image_id}.* image, left out")
            continue
        try:
            w, h = image_size(img)
        except ValueError as e:
            counts["image unreadable"] += 1
            report.setdefault(key, []).append(f"{e}, left out")
            continue
        if ann.width is None or ann.height is None:
            counts["size missing"] += 1
            problems.append(f"<size> missing or invalid: using the image's {w}x{h}")
        elif (ann.width, ann.height) != (w, h):
            counts["size mismatch"] += 1
            problems.append(f"<size> says {ann.width}x{ann.height}, the image is {w}x{h}: using the image's")
        rows = _boxes(ann, w, h, cls_of, difficult, problems, counts)
        if problems:
            report.setdefault(key, []).extend(problems)
        _place_image(img, out / "images" / split / img.name, mode)
        lines = [f"{c} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
                 for c, x0, y0, x1, y1 in rows]
        (out / "labels" / split / f"{img.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        coco["images"].append({"id": img_id, "file_name": img.name, "width": w, "height": h})
        for c, x0, y0, x1, y1 in rows:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": img_id,
                                        "category_id": c + 1, "bbox": [round(x0, 3), round(y0, 3),
                                                                       round(x1 - x0, 3), round(y1 - y0, 3)],
                                        "area": round((x1 - x0) * (y1 - y0), 3), "iscrowd": 0})
        n_images += 1
        n_boxes += len(rows)
    if n_images == 0:
        raise VocError(f"{root}: split '{split}' has no usable image ({dict(counts)})")
    (out / "annotations").mkdir(exist_ok=True)
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return {"images": n_images, "boxes": n_boxes}


def convert_voc(root, out, train: str | None = None, val: str | None = None, names: list[str] | None = None,
                difficult: str = "skip", mode: str = "symlink", progress: bool = True, replace: bool = True) -> dict:
    """Convert the VOC folder ``root`` (splits ``train`` / ``val`` of ImageSets/Main; default trainval/test when
    a test list exists, else train/val) into a YOLO dataset in ``out``. ``names``: the class list in index order
    (default: every class the annotations use, sorted). ``mode``: symlink (default) or copy the images.

    Returns the report: {"data" (yaml path), "names", "splits" {split: {images, boxes}}, "counts" {reason: n},
    "files" {annotation: [problems]}}; it is also written to ``out/voc_report.json``. ``out`` is built in a
    temporary sibling folder and renamed into place, so it is never half-written; an existing ``out`` is only
    replaced when it holds an earlier conversion (``voc_report.json``); with ``replace=False`` an ``out`` that
    appeared meanwhile (the same conversion by a concurrent process) is kept and ours discarded.
    """
    root, out = Path(root), Path(out)
    _check_root(root)
    if difficult not in ("skip", "keep"):
        raise VocError(f"difficult: expected skip or keep, found {difficult!r}")
    if mode not in ("symlink", "copy"):
        raise VocError(f"mode: expected symlink or copy, found {mode!r}")
    d_train, d_val = default_splits(root)
    train, val = train or d_train, val or d_val
    splits = list(dict.fromkeys([train, val]))
    ids = {s: read_split(root, s) for s in splits}
    anns, missing = _read_annotations(root, sorted({i for s in splits for i in ids[s]}), progress)
    names = _class_list(root, names, [anns[i] for i in ids[train]], train, difficult)
    cls_of = {n: i for i, n in enumerate(names)}

    if out.exists() and any(out.iterdir()) and not (out / "voc_report.json").is_file():
        raise VocError(f"{out}: exists and is not an earlier VOC conversion (no voc_report.json); choose an empty "
                       "or new folder")
    # replace=False: a folder another process (DDP rank) finished meanwhile is kept, ours dropped
    with atomic_dir(out, replace=replace) as tmp:
        counts: Counter = Counter()
        files: dict[str, list[str]] = {}
        for image_id in missing:
            files.setdefault(f"Annotations/{image_id}.xml", []).append("annotation file missing: image has no boxes")
            counts["annotation missing"] += 1
        stats = {s: _convert_split(root, s, ids[s], [anns[i] for i in ids[s]], cls_of, difficult, tmp, mode,
                                   files, counts) for s in splits}
        data = {"path": ".", "train": f"images/{train}", "val": f"images/{val}", "nc": len(names),
                "names": dict(enumerate(names))}
        (tmp / "data.yaml").write_text(f"# converted from the VOC folder {root.resolve()} by yolo_prune "
                                       f"(voc2yolo, difficult={difficult})\n" + yaml.safe_dump(data, sort_keys=False))
        report = {"source": str(root.resolve()), "version": VERSION, "train": train, "val": val, "names": names,
                  "difficult": difficult, "splits": stats, "counts": dict(sorted(counts.items())),
                  "files": dict(sorted(files.items()))}
        (tmp / "voc_report.json").write_text(json.dumps(report, indent=1))
    report["data"] = str(out / "data.yaml")
    return report


def _read_annotations(root: Path, image_ids: list[str], progress: bool) -> tuple[dict, list[str]]:
    """({image id: VocAnnotation}, [ids without an annotation file]): a missing file reads as no boxes."""
    anns: dict[str, VocAnnotation] = {}
    iterator = image_ids
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc=f"reading {root.name} annotations", unit="xml")
    missing = []
    for image_id in iterator:
        p = root / "Annotations" / f"{image_id}.xml"
        if not p.is_file():
            missing.append(image_id)
            anns[image_id] = VocAnnotation(p, None, None)
            continue
        anns[image_id] = read_annotation(p)
    return anns, missing


def _class_list(root: Path, names, train_annotations: list[VocAnnotation], train: str, difficult: str) -> list[str]:
    """``names`` checked (distinct, not empty), or every class the train annotations use, sorted."""
    if names is None:
        names = class_names(train_annotations, difficult)
        if not names:
            raise VocError(f"{root}: the '{train}' annotations name no class; pass the class list (--names)")
    else:
        names = [str(n) for n in names]
        if len(set(names)) != len(names) or not names:
            raise VocError(f"names: expected distinct class names, found {names}")
    return names


def summary(report: dict, max_files: int = 20) -> str:
    """Human-readable lines: per split images/boxes, dropped/changed boxes by reason, then the files concerned."""
    lines = [f"{report['data']}: classes {report['names']}"]
    for s, st in report["splits"].items():
        lines.append(f"  {s}: {st['images']} images, {st['boxes']} boxes")
    problems = {k: v for k, v in report["counts"].items() if k != "kept"}
    if problems:
        lines.append("  not kept as written: " + ", ".join(f"{v} {k}" for k, v in problems.items()))
        for i, (f, msgs) in enumerate(report["files"].items()):
            if i == max_files:
                lines.append(f"  ... {len(report['files']) - max_files} more files, see voc_report.json")
                break
            lines.extend(f"  {f}: {m}" for m in msgs)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- cached use
def default_cache_dir() -> Path:
    return Path(os.environ.get("YOLO_PRUNE_CACHE", "runs/cache")) / "voc"


def _fingerprint(root: Path, train: str, val: str, names, difficult: str) -> str:
    """Changes when any annotation, split list or image file changes (names, sizes, mtimes) or an option does."""
    h = hashlib.sha256(json.dumps([VERSION, str(root.resolve()), train, val, names, difficult]).encode())
    for folder in ("ImageSets/Main", "Annotations", "JPEGImages"):
        d = root / folder
        if d.is_dir():
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                if entry.is_file():
                    st = entry.stat()
                    h.update(f"{folder}/{entry.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def voc_data_yaml(root, cache_dir=None, train: str | None = None, val: str | None = None, names=None,
                  difficult: str = "skip", verbose: bool = True) -> Path:
    """The data yaml of a VOC folder, converted once into ``cache_dir`` (default runs/cache/voc, or
    $YOLO_PRUNE_CACHE/voc) under a name fixed by the folder's content and the options: the same VOC folder always
    gives the same yaml path, and a changed one a new conversion."""
    root = Path(root)
    _check_root(root)
    d_train, d_val = default_splits(root)
    train, val = train or d_train, val or d_val
    key = _fingerprint(root, train, val, names, difficult)
    out = Path(cache_dir or default_cache_dir()) / f"{root.resolve().name}-{key}"
    if (out / "data.yaml").is_file() and (out / "voc_report.json").is_file():
        return out / "data.yaml"
    report = convert_voc(root, out, train=train, val=val, names=names, difficult=difficult, progress=verbose,
                         replace=False)
    if verbose:
        print(summary(report, max_files=10), flush=True)
    return out / "data.yaml"
