"""Ultralytics models: offline yaml builds, eval/training outputs, .pt round trips, ultralytics.YOLO interop."""
import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import yolo_prune  # noqa: F401
from yolo_prune.models import checkpoint, load
from yolo_prune.models.safe_pickle import RefusedGlobal, pickle_globals
from yolo_prune.models.spec import resized_bn, resized_conv, set_module
from yolo_prune.models.ultralytics import (UltralyticsDetector, build_ultralytics, load_ultralytics_pt,
                                           load_yaml_model, resolve_model_yaml, save_ultralytics_pt)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def v8n():
    return load_yaml_model("yolov8n.yaml")


def test_v8n_from_yaml(v8n):
    assert isinstance(v8n, UltralyticsDetector) and not v8n.training
    assert (v8n.family, v8n.head_type, v8n.nc, v8n.strides, v8n.anchors) == ("ultralytics", "anchor_free", 80,
                                                                              (8, 16, 32), None)
    assert sum(p.numel() for p in v8n.parameters()) == 3_157_200  # ultralytics reports 3.157M for v8n at nc 80
    assert v8n.spec["base"]["scale"] == "n" and v8n.spec["family"] == "ultralytics"
    heads = v8n.head_modules()
    assert heads == [f"model.model.22.cv{b}.{i}.2" for b in (2, 3) for i in range(3)] + ["model.model.22.dfl.conv"]
    assert [v8n.get_submodule(n).out_channels for n in heads] == [64] * 3 + [80] * 3 + [1]


# parameter counts ultralytics prints for these models at nc=80
@pytest.mark.parametrize("name,params", [("yolo11n.yaml", 2_624_080), ("yolov5nu.yaml", 2_654_816)])
def test_other_packaged_yamls_match_ultralytics(name, params):
    det = load_yaml_model(name)
    assert det.nc == 80 and det.strides == (8, 16, 32) and det.spec["base"]["scale"] == "n"
    assert sum(p.numel() for p in det.parameters()) == params
    with torch.no_grad():
        assert det(torch.rand(1, 3, 64, 64)).shape == (1, 64 + 16 + 4, 4 + 80)


def test_yolov5n_yaml_is_the_ultralytics_v5u_architecture():
    a, b = resolve_model_yaml("yolov5n.yaml"), resolve_model_yaml("yolov5nu.yaml")
    assert a["scale"] == b["scale"] == "n" and a["backbone"] == b["backbone"] and "anchors" not in a


def test_eval_output_is_decoded_xywh_and_scores(v8n):
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        y = v8n(x)
    n = 8 * 12 + 4 * 6 + 2 * 3
    assert y.shape == (2, n, 84)
    assert float(y[..., 4:].min()) >= 0 and float(y[..., 4:].max()) <= 1
    cx, cy = y[0, :, 0], y[0, :, 1]
    assert float(cx.mean()) > 10 and float(cy.mean()) > 10 and float(y[0, :, 2:4].min()) >= 0


def test_training_output_feeds_v8_detection_loss(v8n):
    from ultralytics.utils.loss import v8DetectionLoss

    det = copy.deepcopy(v8n).train()  # train mode updates BN statistics: keep the shared model intact
    x = torch.rand(2, 3, 64, 64)
    preds = det(x)
    assert set(preds) >= {"boxes", "scores", "feats"}
    batch = {"batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[0.0], [1.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.4], [0.3, 0.6, 0.2, 0.2]]), "img": x}
    loss, items = v8DetectionLoss(det.model)(preds, batch)
    assert torch.isfinite(loss).all() and float(loss.detach().sum()) > 0 and items is not None
    loss.sum().backward()
    grads = [p.grad for n, p in det.named_parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_checkpoint_round_trip_bit_identical(v8n, tmp_path):
    det = v8n
    p = checkpoint.save(det, tmp_path / "v8.pt")
    det2 = load(p)
    assert isinstance(det2, UltralyticsDetector) and det2.names == det.names
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(det.eval()(x), det2(x))


def _shrink_stem(det, keep=8):
    """Physically prune model.0's output channels (and model.1's inputs) by hand: a C2f-free conv pair."""
    idx = torch.arange(keep)
    c0, b0, c1 = det.model.model[0].conv, det.model.model[0].bn, det.model.model[1].conv
    n0 = resized_conv(c0, c0.in_channels, keep, 1)
    n0.weight.data = c0.weight.data[idx].clone()
    nb = resized_bn(b0, keep)
    for k in ("weight", "bias", "running_mean", "running_var"):
        getattr(nb, k).data = getattr(b0, k).data[idx].clone()
    n1 = resized_conv(c1, keep, c1.out_channels, 1)
    n1.weight.data = c1.weight.data[:, idx].clone()
    set_module(det, "model.model.0.conv", n0)
    set_module(det, "model.model.0.bn", nb)
    set_module(det, "model.model.1.conv", n1)
    return det


@pytest.fixture(scope="module")
def pruned_pt(tmp_path_factory):
    det = _shrink_stem(load_yaml_model("yolov8n.yaml", nc=2)).eval()
    det.names = {0: "cat", 1: "dog"}
    handle = det.model.model[0].register_forward_hook(lambda *a: None)  # must not end up in the file
    p = save_ultralytics_pt(det, tmp_path_factory.mktemp("pruned") / "pruned.pt")
    handle.remove()
    return det, p


def test_pruned_model_ultralytics_pt_round_trip_and_yolo_predict(pruned_pt):
    det, p = pruned_pt
    found = pickle_globals(p)
    assert not any(g.startswith("yolo_prune") for g in found)
    assert "ultralytics.nn.tasks.DetectionModel" in found

    det2 = load_ultralytics_pt(p)
    assert det2.model.model[0].conv.out_channels == 8 and det2.names == det.names
    assert all(p.requires_grad for n, p in det2.named_parameters() if ".dfl." not in n)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(det(x), det2(x))
    assert isinstance(load(p), UltralyticsDetector)  # models.load dispatches ultralytics .pt files here

    # the file opens in ultralytics itself, pruned widths and all
    from ultralytics import YOLO
    yolo = YOLO(str(p))
    assert yolo.model.model[0].conv.out_channels == 8 and yolo.names == det.names
    img = np.full((64, 64, 3), 114, np.uint8)
    res = yolo.predict(img, imgsz=64, device="cpu", verbose=False, save=False)
    assert len(res) == 1 and res[0].boxes.data.shape[1] == 6


def test_yolo_val_on_pruned_checkpoint(pruned_pt, tmp_path):
    """ultralytics' own validator runs on our saved pruned file (tiny synthetic dataset, no plots)."""
    _, p = pruned_pt
    import cv2
    for split in ("images", "labels"):
        (tmp_path / "ds" / split).mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(tmp_path / "ds" / "images" / f"{i}.jpg"), np.full((64, 64, 3), 40 * i, np.uint8))
        (tmp_path / "ds" / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path / "ds"), "train": "images", "val": "images",
                                    "names": {0: "a", 1: "b"}}))
    from ultralytics import YOLO
    metrics = YOLO(str(p)).val(data=str(data), imgsz=64, batch=2, device="cpu", workers=0, plots=False,
                               verbose=False, project=str(tmp_path / "runs"), save_json=False)
    assert 0.0 <= metrics.box.map <= 1.0


def test_refuses_foreign_globals_in_ultralytics_pt(pruned_pt, tmp_path):
    ck = torch.load(pruned_pt[1], weights_only=False)
    ck["extra"] = os.system  # a function reference is a global the loader must refuse
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(RefusedGlobal, match=r"refused global 'posix\.system'"):
        load_ultralytics_pt(tmp_path / "bad.pt")


def test_own_yaml_file_and_bad_yaml(tmp_path):
    d = resolve_model_yaml("yolov8n.yaml")
    own = tmp_path / "my_model.yaml"
    own.write_text(yaml.safe_dump({k: v for k, v in d.items() if k not in ("scale", "yaml_file")} | {"nc": 4},
                                  sort_keys=False))
    det = load(own)
    assert det.nc == 4 and det.spec["base"]["scale"] == "n"  # no scale in the name: first listed scale
    assert sum(p.numel() for p in det.parameters()) < 3_157_200

    evil = dict(d)
    evil["backbone"] = [[-1, 1, "torch_safe_load", ["x.pt"]]] + d["backbone"][1:]
    with pytest.raises(ValueError, match=r"layer 0: module 'torch_safe_load'"):
        build_ultralytics(evil)
    with pytest.raises(ValueError, match="activation"):
        build_ultralytics(d | {"activation": "__import__('os').system('true')"})
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        load_yaml_model("nothere.yaml")
    with pytest.raises(FileNotFoundError, match="supply"):
        load_yaml_model(tmp_path / "sub" / "missing.yaml")


def test_import_and_build_stay_offline_and_out_of_home(tmp_path):
    """Fresh interpreter, empty HOME: nothing appears there and no socket connects or resolves."""
    home = tmp_path / "home"
    home.mkdir()
    code = textwrap.dedent(f"""
        import socket, sys
        sys.path.insert(0, {str(ROOT)!r})
        calls = []
        def refuse(*a, **k):
            calls.append(a)
            raise OSError("network disabled by test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.getaddrinfo = refuse
        socket.create_connection = refuse
        import yolo_prune
        from yolo_prune.models import load
        det = load("yolov8n.yaml", nc=2)
        import ultralytics
        assert det.nc == 2
        print("calls", len(calls))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_CONFIG_DIR", "XDG_CONFIG_HOME", "YOLO_OFFLINE")}
    env["HOME"] = str(home)
    env["TMPDIR"] = str(tmp_path / "tmp")  # where the private ultralytics config dir goes (and must be removed)
    (tmp_path / "tmp").mkdir()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "calls 0" in out.stdout, out.stdout
    assert list(home.rglob("*")) == []
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
def test_prune_model_then_ultralytics_pt_opens_in_yolo(tmp_path):
    """The real pruning engine's output (C2f widths included) survives save_ultralytics_pt -> ultralytics.YOLO."""
    from ultralytics import YOLO

    from yolo_prune.prune import prune_model

    det = load_yaml_model("yolov8n.yaml", nc=2)
    before = sum(p.numel() for p in det.parameters())
    prune_model(det, ratio=0.5, imgsz=64)
    det.eval()
    assert sum(p.numel() for p in det.parameters()) < 0.8 * before
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = det(x)
    p = save_ultralytics_pt(det, tmp_path / "pruned.pt")
    with torch.no_grad():
        assert torch.equal(load_ultralytics_pt(p)(x), y)
        assert torch.equal(load(checkpoint.save(det, tmp_path / "ours.pt"))(x), y)
    yolo = YOLO(str(p))
    assert sum(q.numel() for q in yolo.model.parameters()) == sum(q.numel() for q in det.parameters())
    res = yolo.predict(np.full((64, 64, 3), 114, np.uint8), imgsz=64, device="cpu", verbose=False)
    assert res[0].boxes.data.shape[1] == 6
