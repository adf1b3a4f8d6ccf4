"""YOLO-format datasets for training: ultralytics' dataset and augmentation, with our own label checks.

ultralytics drops a whole image when one label line is bad and writes ``labels/*.cache`` files next to the data;
here every label line is checked on its own (bad lines are counted, skipped and listed in ONE warning), nothing is
written anywhere, and an empty dataset stops with a clear error before training starts.
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import offline
from .labels import parse_labels
from .sources import list_images, load_data_yaml  # noqa: F401  (load_data_yaml: re-exported for callers)
# ultralytics (its dataset class, augmentation defaults) is imported where used: heavy, not needed to import us


class DataWarning(UserWarning):
    """Problems in a dataset that were skipped (bad label lines, unreadable images)."""


def label_path(im_file: str) -> Path:
    """yolov5/ultralytics convention: the last ``/images/`` in the path becomes ``/labels/``, suffix ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = im_file.rpartition(sa)
    base = (head + sb + tail) if sep else im_file
    return Path(base).with_suffix(".txt")


def parse_label_file(path: Path, nc: int) -> tuple[np.ndarray, list[str]]:
    """Valid rows (n, 5) [cls, cx, cy, w, h] and one reason per rejected line ("line 3: class 7 >= nc 3").

    The rules live in ``labels.py``, shared with the evaluation reader."""
    return parse_labels(Path(path), nc)


def image_size(path: str) -> tuple[int, int] | None:
    """(height, width) honouring EXIF rotation, or None when the file is not a readable image."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            w, h = ImageOps.exif_transpose(im).size if im.getexif().get(274, 1) in (5, 6, 7, 8) else im.size
        return (h, w) if w >= 2 and h >= 2 else None
    except Exception:  # PIL raises many types for corrupt files
        return None


def scan_dataset(im_files: list[str], nc: int) -> tuple[list[dict], dict]:
    """ultralytics-style label dicts for every readable image, plus a report of what was skipped.

    The report: {"images": n read, "unreadable": [paths], "bad_lines": [(label file, reason)], "labels": n boxes,
    "missing_labels": n images without a label file (kept as backgrounds)}.
    """
    labels, unreadable, bad, missing = [], [], [], 0
    for f in im_files:
        shape = image_size(f)
        if shape is None:
            unreadable.append(f)
            continue
        lp = label_path(f)
        if lp.is_file():
            lb, problems = parse_label_file(lp, nc)
            bad += [(str(lp), why) for why in problems]
        else:
            lb, missing = np.zeros((0, 5), np.float32), missing + 1
        labels.append({"im_file": f, "shape": shape, "cls": lb[:, 0:1], "bboxes": lb[:, 1:], "segments": [],
                       "keypoints": None, "normalized": True, "bbox_format": "xywh"})
    report = {"images": len(labels), "unreadable": unreadable, "bad_lines": bad,
              "labels": int(sum(len(lb["cls"]) for lb in labels)), "missing_labels": missing}
    return labels, report


def warn_skipped(report: dict, source: str, limit: int = 20) -> None:
    """ONE warning listing everything that was skipped (the first ``limit`` entries, then a count)."""
    items = [f"{p}: unreadable image" for p in report["unreadable"]] + [f"{p}: {why}" for p, why in report["bad_lines"]]
    if not items:
        return
    shown = "\n  ".join(items[:limit]) + (f"\n  ... and {len(items) - limit} more" if len(items) > limit else "")
    warnings.warn(f"{source}: skipped {len(report['unreadable'])} unreadable images and {len(report['bad_lines'])} "
                  f"bad label lines:\n  {shown}", DataWarning, stacklevel=3)


def _dataset_class():
    offline.apply()  # before ultralytics is imported
    from ultralytics.data.dataset import YOLODataset

    class CheckedYOLODataset(YOLODataset):
        """ultralytics' YOLODataset with per-line label checks and no cache files."""

        def __init__(self, *args, im_files: list[str], source: str, **kwargs):
            self._given_files, self._source = im_files, source
            super().__init__(*args, **kwargs)

        def get_img_files(self, img_path):
            return list(self._given_files)

        def get_labels(self):
            labels, self.scan_report = scan_dataset(self.im_files, len(self.data["names"]))
            warn_skipped(self.scan_report, self._source)
            if not labels:
                raise ValueError(f"{self._source}: no readable images among {len(self.im_files)} files")
            self.im_files = [lb["im_file"] for lb in labels]
            self.label_files = [str(label_path(f)) for f in self.im_files]
            return labels

    return CheckedYOLODataset


def augment_hyp(cfg: dict):
    """ultralytics' full default namespace with our augmentation values on top (its transforms read many keys)."""
    from ultralytics.cfg import get_cfg

    keys = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud", "fliplr",
            "mosaic", "mixup", "copy_paste", "cutmix")
    hyp = get_cfg(overrides={k: cfg[k] for k in keys if k in cfg})
    return hyp


def build_dataset(data: dict, split: str, imgsz: int, batch: int, cfg: dict, augment: bool = True, stride: int = 32):
    """A CheckedYOLODataset for ``split`` of a loaded data yaml (see load_data_yaml). Empty data raises."""
    source = f"{data['yaml_file']} '{split}'"
    im_files = sorted({str(f) for f in list_images(data[split], field=split, allow_empty=True)})
    if not im_files:
        raise ValueError(f"{source}: no images found in {', '.join(data[split])} (expected *.jpg/*.png files)")
    cls = _dataset_class()
    ds = cls(img_path=data[split], im_files=im_files, source=source, imgsz=imgsz, augment=augment,
             hyp=augment_hyp(cfg), batch_size=batch, stride=stride, rect=False, cache=False, prefix="",
             data={"names": data["names"], "nc": data["nc"], "channels": 3}, task="detect")
    if ds.scan_report["labels"] == 0:
        raise ValueError(f"{source}: no valid labels in {ds.scan_report['images']} images "
                         f"({len(ds.scan_report['bad_lines'])} bad lines skipped); nothing to train on")
    return ds


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset, batch: int, workers: int, seed: int, rank: int = -1, world_size: int = 1,
                 shuffle: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader with ultralytics' collate; DistributedSampler when world_size > 1 (batch is per process)."""
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed) \
        if world_size > 1 else None
    gen = torch.Generator()
    gen.manual_seed(seed + max(rank, 0))
    return DataLoader(dataset, batch_size=batch, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=dataset.collate_fn, worker_init_fn=_seed_worker, generator=gen,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0, drop_last=False)
