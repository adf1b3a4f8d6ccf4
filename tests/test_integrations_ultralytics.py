"""ultralytics' own trainer on a pruned model: widths and parameter count survive training, resume and reload."""
import socket

import pytest
import torch

from yolo_prune.data.synthetic import make_synthetic
from yolo_prune.models import load
from yolo_prune.models.spec import record_layers
from yolo_prune.models.ultralytics import (PRUNED_MARKER, load_yaml_model, pruned_marker, save_ultralytics_pt)


class _Stop(Exception):
    pass


def _n(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    from yolo_prune.prune import prune_model

    tmp = tmp_path_factory.mktemp("ultra")
    data = make_synthetic(tmp / "data", n_train=8, n_val=4, imgsz=64, nc=3, seed=0)
    det = load_yaml_model("yolov8n.yaml", nc=3)
    full = _n(det)
    prune_model(det, ratio=0.5, imgsz=64)
    det.eval()
    assert _n(det) < 0.8 * full
    return tmp, data, det, save_ultralytics_pt(det, tmp / "p.ultralytics.pt")


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise OSError("network disabled by test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return calls


def _train_args(tmp, data, name, **kw):
    return {**dict(data=str(data), epochs=2, imgsz=64, batch=4, device="cpu", workers=0, project=str(tmp),
                   name=name, exist_ok=True, seed=0, mosaic=0.0, plots=True, verbose=False), **kw}


def test_pruned_trainer_keeps_widths_through_train_resume_reload(pruned, no_network):
    from ultralytics import YOLO

    from yolo_prune.integrations.ultralytics import PrunedTrainer

    tmp, data, det, p = pruned
    widths, params = record_layers(det.model), _n(det.model)
    assert pruned_marker(torch.load(p, weights_only=False)["ema"].yaml) is not None

    def stop_after_first_save(trainer):
        assert record_layers(trainer.model) == widths and _n(trainer.model) == params  # the live training model
        assert record_layers(trainer.ema.ema) == widths
        if trainer.epoch == 0:
            raise _Stop

    model = YOLO(str(p))
    model.add_callback("on_model_save", stop_after_first_save)
    with pytest.raises(_Stop):  # epoch 1 of 2 done (2 steps of batch 4), then "interrupted"
        model.train(trainer=PrunedTrainer, **_train_args(tmp, data, "run"))
    last = tmp / "run" / "weights" / "last.pt"
    assert record_layers(YOLO(str(last)).model) == widths

    resumed = YOLO(str(last))
    resumed.add_callback("on_model_save", stop_after_first_save)
    resumed.train(trainer=PrunedTrainer, resume=True)
    rows = (tmp / "run" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch")  # header + epoch 1 (first run) + epoch 2 (resumed)
    assert record_layers(resumed.model) == widths and _n(resumed.model) == params
    for f in ("best.pt", "last.pt"):
        w = tmp / "run" / "weights" / f
        assert record_layers(YOLO(str(w)).model) == widths and _n(YOLO(str(w)).model) == params
        ours = load(w)  # our allow-list loader, at the pruned widths
        assert record_layers(ours.model) == widths and _n(ours.model) == params
    assert no_network == []


def test_default_trainer_refuses_marked_pruned_model_loudly(pruned, no_network):
    from ultralytics import YOLO

    tmp, data, det, p = pruned
    with pytest.raises(KeyError, match="PRUNED by yolo_prune.*PrunedTrainer"):
        YOLO(str(p)).train(**_train_args(tmp, data, "default", epochs=1))
    # predict/val-style use of the same file is unaffected, and our loader restores the real scale
    assert record_layers(load(p).model) == record_layers(det.model)
    assert load(p).model.yaml.get("scale") == "n" and PRUNED_MARKER not in load(p).model.yaml


def test_pruned_trainer_refuses_yaml_and_other_class_count(pruned):
    from ultralytics import YOLO

    from yolo_prune.integrations.ultralytics import PrunedTrainer

    tmp, data, det, p = pruned
    with pytest.raises(ValueError, match="never builds one from a yaml"):
        YOLO(str(p)).train(trainer=PrunedTrainer, **_train_args(tmp, data, "nopre", pretrained=False))
    other = make_synthetic(tmp / "data5", n_train=2, n_val=1, imgsz=64, nc=5, seed=0)
    with pytest.raises(ValueError, match="5 classes, the model's head 3"):
        YOLO(str(p)).train(trainer=PrunedTrainer, **_train_args(tmp, other, "nc5"))


def test_finetune_engine_ultralytics_writes_ours_and_native(pruned, tmp_path):
    from yolo_prune.train import finetune

    tmp, data, det, p = pruned
    from yolo_prune.models.checkpoint import save

    ours_in = save(det, tmp_path / "in.pt")
    r = finetune(str(ours_in), str(data), out_dir=tmp_path / "ft", engine="ultralytics",
                 overrides={"epochs": 1, "imgsz": 64, "batch": 4, "device": "cpu", "workers": 0, "seed": 0,
                            "mosaic": 0.0, "plots": False})
    assert r["engine"] == "ultralytics" and r["epochs_done"] == 1
    for f in ("best.pt", "best.ultralytics.pt", "weights/best.pt", "weights/last.pt", "results.csv"):
        assert (tmp_path / "ft" / f).is_file(), f
    assert record_layers(load(tmp_path / "ft" / "best.pt").model) == record_layers(det.model)
    assert record_layers(load(tmp_path / "ft" / "best.ultralytics.pt").model) == record_layers(det.model)


def test_finetune_engine_ultralytics_refuses_other_families(tmp_path):
    import yaml

    from yolo_prune.models.checkpoint import save
    from yolo_prune.models.yolov5_legacy import build_yolov5
    from yolo_prune.train import finetune

    data = make_synthetic(tmp_path / "d", n_train=2, n_val=1, imgsz=64, nc=2, seed=0)
    cfg = yaml.safe_load("""
nc: 2
depth_multiple: 0.33
width_multiple: 0.25
anchors: [[10,13, 16,30, 33,23]]
backbone: [[-1, 1, Conv, [64, 6, 2, 2]], [-1, 1, Conv, [128, 3, 2]]]
head: [[[1], 1, Detect, [nc, anchors]]]
""")
    p = save(build_yolov5(cfg), tmp_path / "v5.pt")
    with pytest.raises(ValueError, match="yolov5 model: use the default --engine ours"):
        finetune(str(p), str(data), out_dir=tmp_path / "ft", engine="ultralytics", overrides={"epochs": 1})


def test_offline_guards_swap_amp_check_and_font_lookup_only_inside(pruned):
    import ultralytics.engine.trainer as trainer_mod
    import ultralytics.utils.plotting as plotting

    from yolo_prune.integrations.ultralytics import _amp_check, _local_font, offline_guards

    before = (trainer_mod.check_amp, plotting.check_font)
    with offline_guards():
        assert trainer_mod.check_amp is _amp_check and plotting.check_font is _local_font
        assert plotting.check_font("Arial.Unicode.ttf").is_file()  # a local font, no download
        assert trainer_mod.check_amp(pruned[2].model) is False  # CPU: no AMP, and no reference model fetched
    assert (trainer_mod.check_amp, plotting.check_font) == before
