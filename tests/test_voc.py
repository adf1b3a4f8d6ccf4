"""Pascal VOC input (yolo_prune.data.voc, tools/voc2yolo.py, --data VOC_ROOT): boxes, defects, hostile XML."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolo_prune.data.sources import load_data_yaml
from yolo_prune.data.voc import VocError, convert_voc, voc_data_yaml


def _xml(name, w, h, objects, size=True):
    objs = "".join(
        f"<object><name>{o[0]}</name><difficult>{int(o[2]) if len(o) > 2 else 0}</difficult>"
        + ("" if o[1] is None else "<bndbox>" + "".join(f"<{k}>{v}</{k}>" for k, v in
                                                         zip(("xmin", "ymin", "xmax", "ymax"), o[1])) + "</bndbox>")
        + "</object>" for o in objects)
    sz = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>{name}.jpg</filename>{sz}{objs}</annotation>"


def make_voc(root: Path, images: dict, splits: dict, w=96, h=64) -> Path:
    """images: {id: (objects, size_in_xml)}; objects: (name, (xmin, ymin, xmax, ymax) or None, difficult)."""
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, (objects, size) in images.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, w, h, objects, size))
    for split, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def _defect_voc(tmp_path):
    return make_voc(tmp_path / "voc", {
        "a": ([("cat", (11, 21, 50, 60)), ("dog", (1, 1, 96, 64))], True),  # whole image: edges 0..96, 0..64
        "b": ([("cat", (40, 10, 30, 20)),   # inverted
               ("cat", (5, 5, 5, 30)),      # zero area
               ("dog", (200, 200, 300, 300)),  # outside the image
               ("dog", (-20, 10, 40, 30)),  # clipped
               ("bird", (10, 10, 20, 20), 1),  # difficult
               ("cat", None)], True),       # no bndbox
        "c": ([("dog", (10, 10, 30, 30))], False),  # no <size>
    }, {"trainval": ["a", "b"], "test": ["c"], "train": ["a"], "val": ["b"]})


def test_boxes_defects_and_outputs(tmp_path):
    rep = convert_voc(_defect_voc(tmp_path), tmp_path / "out", progress=False)
    assert rep["train"] == "trainval" and rep["val"] == "test"  # defaults when a test list exists
    assert rep["names"] == ["cat", "dog"]  # "bird" only appears as difficult (skipped): not a class
    assert rep["counts"] == {"clipped": 1, "difficult": 1, "inverted box": 1, "kept": 4, "missing or non-numeric "
                             "bndbox": 1, "outside the image": 1, "size missing": 1, "zero area": 1}
    files = rep["files"]
    assert sorted(files) == ["Annotations/b.xml", "Annotations/c.xml"]
    assert any("inverted box (xmin 40 xmax 30" in m for m in files["Annotations/b.xml"])
    assert any("zero area" in m for m in files["Annotations/b.xml"])
    assert any("<size> missing" in m for m in files["Annotations/c.xml"])
    out = tmp_path / "out"
    rows = [list(map(float, ln.split())) for ln in (out / "labels/trainval/a.txt").read_text().splitlines()]
    # VOC 1-based pixel indices: xmin 11..xmax 50 covers edges 10..50
    assert np.allclose(rows[0], [0, 30 / 96, 40 / 64, 40 / 96, 40 / 64], atol=1e-6)
    assert np.allclose(rows[1], [1, 0.5, 0.5, 1, 1], atol=1e-6)
    clipped = [list(map(float, ln.split())) for ln in (out / "labels/trainval/b.txt").read_text().splitlines()]
    assert np.allclose(clipped, [[1, 20 / 96, 19.5 / 64, 40 / 96, 21 / 64]], atol=1e-6)  # x 0..40, y 9..30
    d = load_data_yaml(out / "data.yaml")
    assert d["names"] == {0: "cat", 1: "dog"} and Path(d["val"][0]).name == "test"
    coco = json.loads((out / "annotations/instances_test.json").read_text())
    assert coco["annotations"][0]["bbox"] == [9.0, 9.0, 21.0, 21.0]
    assert (out / "images/trainval/a.jpg").resolve() == (tmp_path / "voc/JPEGImages/a.jpg").resolve()
    # given names: an unknown class is counted; difficult kept on request
    rep = convert_voc(tmp_path / "voc", tmp_path / "out", names=["dog", "bird"], difficult="keep", train="train",
                      val="val", progress=False)
    assert rep["counts"]["unknown class"] == 3 and "difficult" not in rep["counts"]
    assert any("unknown class 'cat'" in m for m in rep["files"]["Annotations/a.xml"])


@pytest.mark.parametrize("payload,what", [
    ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
     "<annotation><name>&lol2;</name></annotation>", "DOCTYPE"),
    ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><annotation>&xxe;</annotation>',
     "DOCTYPE"),
    ("<annotation><object>", "not well-formed"),
    ("<html/>", "expected <annotation>"),
])
def test_hostile_xml_refused(tmp_path, payload, what):
    root = make_voc(tmp_path / "voc", {"a": ([("cat", (1, 1, 5, 5))], True)}, {"train": ["a"], "val": ["a"]})
    (root / "Annotations" / "a.xml").write_text(payload)
    with pytest.raises(VocError, match=f"a.xml: .*{what}"):
        convert_voc(root, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_bounds_and_path_ids(tmp_path, monkeypatch):
    import yolo_prune.data.voc as voc

    root = make_voc(tmp_path / "voc", {"a": ([("cat", (1, 1, 5, 5))] * 3, True)}, {"train": ["a"], "val": ["a"]})
    monkeypatch.setattr(voc, "MAX_OBJECTS", 2)
    with pytest.raises(VocError, match="3 objects, more than the 2"):
        convert_voc(root, tmp_path / "out", progress=False)
    monkeypatch.setattr(voc, "MAX_XML_BYTES", 10)
    with pytest.raises(VocError, match="more than the 10"):
        convert_voc(root, tmp_path / "out", progress=False)
    monkeypatch.setattr(voc, "MAX_XML_BYTES", 1 << 20)
    monkeypatch.setattr(voc, "MAX_OBJECTS", 5000)
    (root / "ImageSets/Main/train.txt").write_text("../../etc/passwd\n")
    with pytest.raises(VocError, match="train.txt: line 1: image id expected a plain file name"):
        convert_voc(root, tmp_path / "out", progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    (root / "ImageSets/Main/train.txt").write_text("a\n")
    with pytest.raises(VocError, match="not an earlier VOC conversion"):
        convert_voc(root, tmp_path / "busy", progress=False)


def test_data_accepts_a_voc_root_cached_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_PRUNE_CACHE", str(tmp_path / "cache"))
    root = _defect_voc(tmp_path)
    first = voc_data_yaml(root, verbose=False)
    mtime = first.stat().st_mtime_ns
    d = load_data_yaml(root)  # the data-yaml parser takes the folder itself
    assert d["yaml_file"] == first and first.stat().st_mtime_ns == mtime  # reused, not redone
    assert d["names"] == {0: "cat", 1: "dog"}
    (root / "ImageSets/Main/test.txt").write_text("c\na\n")  # the VOC folder changed: a new conversion
    assert voc_data_yaml(root, verbose=False) != first
    with pytest.raises(FileNotFoundError, match="must be a Pascal VOC root"):
        load_data_yaml(tmp_path / "cache")


def test_voc2yolo_cli(tmp_path, capsys):
    from tools.voc2yolo import main

    assert main([str(_defect_voc(tmp_path)), "--out", str(tmp_path / "o"), "--train", "train", "--val", "val"]) == 0
    text = capsys.readouterr().out
    assert "train: 1 images, 2 boxes" in text and "1 inverted box" in text and "Annotations/b.xml: object 1" in text
    assert main([str(tmp_path), "--out", str(tmp_path / "o2")]) == 2
    assert "not a VOC folder" in capsys.readouterr().err


def test_bccd_defects_found(shared, tmp_path):
    root = shared / "bccd"
    if not (root / "Annotations").is_dir():
        pytest.skip(f"{root} missing")
    rep = convert_voc(root, tmp_path / "bccd", progress=False)
    assert rep["names"] == ["Platelets", "RBC", "WBC"]
    assert rep["splits"] == {"trainval": {"images": 292, "boxes": 3941}, "test": {"images": 72, "boxes": 945}}
    assert rep["counts"] == {"kept": 4886, "zero area": 2}
    assert sorted(rep["files"]) == ["Annotations/BloodImage_00338.xml", "Annotations/BloodImage_00343.xml"]


def test_auto_defaults_rule():
    from yolo_prune.pipeline import load_defaults, resolve_config
    from yolo_prune.pipeline_defaults import recon_epochs, resolve_auto

    cfg = resolve_config(None, {})  # the demo: no weights, auto keeps what the demo was measured with
    demo, _ = resolve_auto(cfg, 384, load_defaults())
    assert (demo["epochs_sparse"], demo["epochs_finetune"], demo["sparsity"], demo["sr"]) == (2, 5, "l1", 0.001)
    assert (demo["compensate"], demo["finetune_freeze_bn"], demo["criterion"]) == ("bias", False, "bn")
    assert demo["finetune_distill"] == 0 and demo["finetune_lr0"] is None
    cfg["weights"] = "w.pt"  # a trained model (the file is not read here): refit, no sparse stage, frozen BN
    for n_train in (292, 128, 20, 50_000):
        auto, notes = resolve_auto(cfg, n_train, load_defaults())
        assert (auto["compensate"], auto["epochs_sparse"], auto["finetune_freeze_bn"]) == ("reconstruct", 0, True)
        assert auto["criterion"] == "taylor"  # a dense model's |γ| says little about what the refit can replace
        assert auto["finetune_distill"] == 0.2  # the baseline teaches the refit model
        assert auto["epochs_finetune"] == auto["plain_arm_epochs"] == recon_epochs(n_train) >= 4
        # the cut model fine-tunes at 3x the plain arm's rate (the recipe's, which keeps a converged model)
        assert auto["finetune_lr0"] == 0.01 and auto["finetune_train"]["lr0"] == 0.00334
    assert any("reconstruct" in n for n in notes) and any("lr0 0.01" in n for n in notes)
    own, _ = resolve_auto({**cfg, "finetune_train": {"lr0": 0.005}}, 292, load_defaults())
    assert own["finetune_lr0"] is None and own["finetune_train"]["lr0"] == 0.005  # the user's rate, both arms
    assert recon_epochs(292) > recon_epochs(5000)  # small sets get more epochs
    cfg["compensate"] = "bias"  # asked for: the targeted fade makes the removed channels constant first
    for n_train, split in ((292, (2, 2)), (128, (4, 5)), (20, (15, 15)), (50_000, (2, 2))):
        auto, notes = resolve_auto(cfg, n_train, load_defaults())
        assert (auto["epochs_sparse"], auto["epochs_finetune"]) == split
        assert auto["plain_arm_epochs"] == sum(split)
        assert auto["finetune_freeze_bn"] is False and auto["criterion"] == "bn"  # the fade ranks by |γ|
        assert auto["finetune_distill"] == 0
    assert (auto["sparsity"], auto["sr"], auto["target_start"], auto["target_zero_at"]) == ("targeted", 0.0, 0, 1.0)
    assert auto["finetune_train"]["optimizer"] == "SGD" and auto["sparse_train"]["bn_recalibrate"] == 16
    assert any("targeted" in n for n in notes)
    assert resolve_auto({**cfg, "compensate": "reconstruct", "criterion": "l2"}, 292, load_defaults())[0][
        "criterion"] == "l2"  # a criterion the user names is kept
    mine = resolve_config(None, {"train.lr0": 0.0005, "finetune_train.momentum": 0.9})  # the user's settings win
    mine["weights"] = "w.pt"
    mine, _ = resolve_auto(mine, 292, load_defaults())
    assert "lr0" not in mine["sparse_train"] and mine["finetune_train"]["momentum"] == 0.9


def test_verdict_against_the_plain_arm():
    from yolo_prune.report.verdict import _against_plain_arm

    rows = [{"stage": "baseline", "mAP50-95": 0.5}, {"stage": "sparse", "mAP50-95": 0.45},
            {"stage": "pruned", "mAP50-95": 0.45}, {"stage": "fine-tuned", "mAP50-95": 0.47}]
    numbers = {}
    text, warning = _against_plain_arm("V.", None, numbers, rows, {"plain": {"mAP50-95": 0.5, "epochs": 4}})
    assert "plain fine-tune of the baseline (4 epochs, mAP50-95 0.5000): 94.0%" in text
    assert "the cut was (nearly) free" in warning and numbers["vs_plain_arm"] == pytest.approx(0.94)
    rows[2]["mAP50-95"] = 0.1
    _, warning = _against_plain_arm("V.", None, {}, rows, {"plain": {"mAP50-95": 0.5}})
    assert "the cut itself cost 0.3500" in warning and "sparse-train longer" in warning
    no_sparse = [rows[0], rows[2], rows[3]]  # reconstruct: no sparse stage, the cut starts from the baseline
    _, warning = _against_plain_arm("V.", None, {}, no_sparse, {"plain": {"mAP50-95": 0.5}, "compensate": "reconstruct"})
    assert "the cut cost 0.4000 mAP50-95 even with the least-squares refit" in warning and "finetune_distill" in warning
    _, warning = _against_plain_arm("V.", None, {}, no_sparse, {"plain": {"mAP50-95": 0.5}, "compensate": "reconstruct",
                                                               "finetune_distill": 0.2})
    assert "fine-tune longer" in warning and "finetune_distill" not in warning  # it is on already
    text, warning = _against_plain_arm("V.", None, {}, rows, {"plain": None})
    assert "No same-budget plain fine-tune arm was run" in text and warning is None


@pytest.mark.slow  # a whole pipeline with a transfer and a plain arm at 64 px: about a minute on 2 cores
def test_pipeline_on_a_voc_folder_with_another_class_count(tmp_path, monkeypatch):
    from yolo_prune.models import checkpoint, load
    from yolo_prune.pipeline import resolve_config, run_pipeline

    monkeypatch.setenv("YOLO_PRUNE_CACHE", str(tmp_path / "cache"))
    objs = [("cat", (5, 5, 40, 40)), ("dog", (50, 20, 90, 60))]
    root = make_voc(tmp_path / "voc", {f"im{i}": (objs, True) for i in range(6)},
                    {"trainval": [f"im{i}" for i in range(4)], "test": ["im4", "im5"]})
    checkpoint.save(load("yolov8n.yaml", nc=80), tmp_path / "coco.pt")
    cfg = resolve_config(None, {"weights": str(tmp_path / "coco.pt"), "data": str(root), "imgsz": 64, "batch": 2,
                                "eval_batch": 2, "epochs_sparse": 1, "epochs_finetune": 1, "plain_arm": "train",
                                "bench_runs": 2, "bench_warmup": 1, "bench_backends": ["ort-cpu"],
                                "train.workers": 0, "train.close_mosaic": 0, "out": str(tmp_path / "run"),
                                # BN statistics of 4 tiny images make this untrained model too steep for the
                                # ONNX check's tolerance
                                "sparse_train.bn_recalibrate": 0, "finetune_train.bn_recalibrate": 0})
    res = run_pipeline(cfg, progress=False)
    stages = res["stages"]
    assert "transferred 349/355 tensors, new head for 2 classes" in stages["transfer"]["result"]["summary"]
    assert stages["plain"]["result"]["epochs"] == 2  # same budget as sparse + fine-tune
    rep = res["report"]
    assert [r["stage"] for r in rep["rows"]][:2] == ["baseline", "plain arm (a)"]
    assert "Against the same-budget plain fine-tune" in rep["verdict"] and "new, untrained head" in rep["verdict"]
    assert rep["warning"] is None or "baseline mAP50-95 is 0" not in rep["warning"]
    assert rep["config"]["sparsity"] == "targeted" and rep["config"]["sr"] == 0.0
    assert load(tmp_path / "run" / "5_finetune" / "best.pt").names == {0: "cat", 1: "dog"}
