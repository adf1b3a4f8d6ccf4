import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    env = os.environ.get("YOLO_PRUNE_SHARED")
    p = Path(env) if env else ROOT.parent / "shared"
    return p if p.is_dir() else None


@pytest.fixture
def shared():
    p = shared_dir()
    if p is None:
        pytest.skip("shared reference data not found: set YOLO_PRUNE_SHARED or place it at ../shared")
    return p


@pytest.fixture
def yolov5n_pt(shared):
    p = shared / "weights" / "yolov5n.pt"
    if not p.is_file():
        pytest.skip(f"{p} missing (official yolov5n v6.1 checkpoint expected there)")
    return p


@pytest.fixture
def coco128(shared):
    p = shared / "coco128"
    if not (p / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"{p}/annotations/instances_val2017.json missing")
    return p


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
