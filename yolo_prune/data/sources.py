"""Where a dataset's images are: the data yaml (ultralytics/yolov5 style) and image sources (folder, list file,
single image, or a list of those). One parser for training, evaluation and the tools."""
from __future__ import annotations

import os
from pathlib import Path

from .images import IMG_SUFFIXES  # noqa: F401  (re-exported for callers)

MAX_LIST_BYTES = 256 * 1024 * 1024  # an image list file (COCO train2017's 118k paths: 5 MB)


def list_images(source, field: str | None = None, allow_empty: bool = False) -> list[Path]:
    """Image files of a folder (recursive, sorted), a single image, a .txt list of paths (relative entries are
    relative to the list file, the yolov5 convention), or a list of those. ``field`` names the data-yaml field
    the source came from, for the error message; ``allow_empty`` returns [] for a folder without images (the
    caller reports it with more context)."""
    if isinstance(source, (list, tuple)):
        return [p for s in source for p in list_images(s, field, allow_empty)]
    p = Path(source)
    where = f"data field '{field}': " if field else ""
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMG_SUFFIXES and f.is_file())
        if not files and not allow_empty:
            raise FileNotFoundError(f"{where}{p}: no images found (expected files ending in "
                                    f"{', '.join(IMG_SUFFIXES)})")
        return files
    if p.is_file() and p.suffix.lower() == ".txt":
        return _read_list_file(p, where)
    if p.is_file():
        return [p]
    raise FileNotFoundError(f"{where}{p} does not exist. Supply an image file, a folder of images or a .txt list "
                            "of image paths")


def _read_list_file(p: Path, where: str) -> list[Path]:
    """The entries of a .txt image list, relative ones relative to the list's folder (yolov5 convention)."""
    size = p.stat().st_size
    if size > MAX_LIST_BYTES:  # a sparse file can claim terabytes in a few bytes of an archive
        raise ValueError(f"{where}{p}: {size:,} bytes, more than the {MAX_LIST_BYTES:,} an image list file may have")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}{p}: expected UTF-8 text (one image path per line), found an undecodable byte at "
                         f"offset {e.start}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        ln = line.strip()
        if not ln:
            continue
        f = Path(ln) if Path(ln).is_absolute() else (p.parent / ln).resolve()
        # an entry is passed on as an image source: a folder ('/') would be walked recursively, a FIFO or device
        # would block the image reader
        if f.exists() and not f.is_file():
            found = "a folder" if f.is_dir() else "a special file (FIFO, device or socket)"
            raise ValueError(f"{where}{p}: line {n}: expected an image file, found {found}: {ln[:200]!r}")
        out.append(f)
    return out


def data_yaml_path(path: str | os.PathLike) -> Path:
    """The data yaml behind ``--data``: the file itself, or for a Pascal VOC folder (Annotations/, JPEGImages/,
    ImageSets/Main/) the yaml of its cached YOLO conversion (yolo_prune.data.voc.voc_data_yaml)."""
    p = Path(path)
    if p.is_dir():
        from .voc import is_voc_root, voc_data_yaml

        if not is_voc_root(p):
            raise FileNotFoundError(f"{p}: a folder given as data must be a Pascal VOC root (Annotations/, "
                                    "JPEGImages/, ImageSets/Main/); otherwise supply a data yaml")
        return voc_data_yaml(p)
    return p


def load_data_yaml(path: str | os.PathLike, splits=("train", "val")) -> dict:
    """Read an ultralytics/yolov5 data yaml (or a Pascal VOC folder, converted once: ``data_yaml_path``).

    Returns {"path": root, "yaml_file", "names" {i: name}, "nc", and for every split present (train/val/test) a
    list of absolute source paths}. ``splits`` must be present and exist. ``path:`` (if given) is the root the
    splits are relative to (relative roots: beside the yaml when there, else from the working directory);
    without it they are relative to the yaml's folder.
    """
    p = data_yaml_path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: data yaml not found. Supply an ultralytics-style data yaml (path, train, val, "
                                "names), e.g. from yolo_prune.data.synthetic.make_synthetic()")
    from ..models.validate import read_yaml_file, walk_plain

    raw = read_yaml_file(p, "data yaml") or {}  # bounded size, UTF-8, safe_load: errors name the file
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: expected a mapping with keys path/train/val/names, found {type(raw).__name__}")
    walk_plain(raw, str(p), "data yaml")  # alias bombs stop at the node budget
    for key in ("path", "train", "val", "test"):
        v = raw.get(key)
        if v is not None and not isinstance(v, str) and not (
                key != "path" and isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ValueError(f"{p}: field '{key}' expected a path{' or a list of paths' if key != 'path' else ''}, "
                             f"found {v!r}"[:300])
    root = p.parent.resolve()
    if raw.get("path"):
        r = Path(str(raw["path"]))
        root = r if r.is_absolute() else ((p.parent / r).resolve() if (p.parent / r).exists() else r.resolve())
    out: dict = {"path": root, "yaml_file": p}
    for split in ("train", "val", "test"):
        if not raw.get(split):
            if split in splits:
                raise ValueError(f"{p}: field '{split}' is missing or empty (expected an image folder, list file or "
                                 f"list of them; found keys {sorted(map(str, raw))})")
            continue
        items = raw[split] if isinstance(raw[split], list) else [raw[split]]
        out[split] = [str(Path(x) if Path(x).is_absolute() else root / x) for x in items]
        if split in splits:
            for src in out[split]:
                if not Path(src).exists():
                    raise FileNotFoundError(f"{p}: field '{split}' points to {src}, which does not exist")
    names = raw.get("names")
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise ValueError(f"{p}: field 'names' expected a list or {{index: name}} mapping, found {names!r}")
    if not all(isinstance(k, int) and not isinstance(k, bool) and isinstance(v, (str, int, float)) for k, v in
               names.items()):
        raise ValueError(f"{p}: field 'names' expected {{index: name}} with integer indices and string names"[:300])
    names = {int(k): str(v) for k, v in names.items()}
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{p}: field 'names' expected indices 0..{len(names) - 1}, found {sorted(names)}")
    if raw.get("nc") is not None and (not isinstance(raw["nc"], int) or raw["nc"] != len(names)):
        raise ValueError(f"{p}: field 'nc' is {raw['nc']} but 'names' has {len(names)} entries")
    out["names"], out["nc"] = names, len(names)
    return out
