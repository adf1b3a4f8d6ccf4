import hashlib
import json

import numpy as np
import pytest
import yaml

from yolo_prune.data.synthetic import SHAPES, make_synthetic


def _digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "data.yaml"}


def test_deterministic_from_seed(tmp_path):
    a = make_synthetic(tmp_path / "a", n_train=6, n_val=3, imgsz=64, nc=3, seed=5).parent
    b = make_synthetic(tmp_path / "b", n_train=6, n_val=3, imgsz=64, nc=3, seed=5).parent
    c = make_synthetic(tmp_path / "c", n_train=6, n_val=3, imgsz=64, nc=3, seed=6).parent
    da, db, dc = _digests(a), _digests(b), _digests(c)
    assert da == db
    assert len(da) == 6 * 2 + 3 * 2 + 2 + 1  # images + labels, 2 jsons, synthetic.json
    assert da["images/train/000001.jpg"] != dc["images/train/000001.jpg"]
    # image k does not depend on how many images are made
    d = make_synthetic(tmp_path / "d", n_train=2, n_val=1, imgsz=64, nc=3, seed=5).parent
    assert _digests(d)["images/train/000002.jpg"] == da["images/train/000002.jpg"]


def test_layout_labels_and_coco_agree(tmp_path):
    data_yaml = make_synthetic(tmp_path / "s", n_train=24, n_val=4, imgsz=96, nc=5, seed=0)
    root = data_yaml.parent
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == {i: SHAPES[i] for i in range(5)} and data["nc"] == 5
    assert (root / data["train"]).is_dir() and (root / data["val"]).is_dir()
    rows = []
    for f in sorted((root / "labels" / "train").glob("*.txt")):
        rows += [list(map(float, line.split())) for line in f.read_text().splitlines()]
    rows = np.array(rows)
    assert rows.shape[1] == 5
    assert set(rows[:, 0].astype(int)) <= set(range(5)) and len(set(rows[:, 0].astype(int))) >= 4
    assert (rows[:, 1:] >= 0).all() and (rows[:, 1:] <= 1).all()
    longest = rows[:, 3:5].max(1)
    assert longest.min() >= 0.04 and longest.max() <= 0.62 and longest.max() > 0.3  # varied 6-60 % scales
    coco = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5]
    assert [c["name"] for c in coco["categories"]] == list(SHAPES[:5])
    assert len(coco["images"]) == 24 and len(coco["annotations"]) == len(rows)
    ann = coco["annotations"][0]
    first = [float(v) for v in (root / "labels/train/000001.txt").read_text().split()[:5]]
    x, y, w, h = ann["bbox"]
    assert ann["image_id"] == 1 and ann["category_id"] == int(first[0]) + 1
    assert abs((x + w / 2) / 96 - first[1]) < 1e-3 and abs(w / 96 - first[3]) < 1e-3


def test_reuse_and_bad_arguments(tmp_path):
    p = make_synthetic(tmp_path / "s", n_train=2, n_val=1, imgsz=64, nc=2)
    stamp = (p.parent / "images/train/000001.jpg").stat().st_mtime_ns
    assert make_synthetic(tmp_path / "s", n_train=2, n_val=1, imgsz=64, nc=2) == p  # reused, not rewritten
    assert (p.parent / "images/train/000001.jpg").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="synthetic dataset made with"):
        make_synthetic(tmp_path / "s", n_train=3, n_val=1, imgsz=64, nc=2)
    make_synthetic(tmp_path / "s", n_train=3, n_val=1, imgsz=64, nc=2, overwrite=True)
    assert len(list((tmp_path / "s/images/train").glob("*.jpg"))) == 3
    with pytest.raises(ValueError, match="nc expected 1..8"):
        make_synthetic(tmp_path / "t", nc=9)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        make_synthetic(tmp_path / "other", n_train=1, n_val=1, imgsz=64)
    assert (tmp_path / "other" / "keep.txt").read_text() == "x"
