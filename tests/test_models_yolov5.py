"""Legacy YOLOv5 (yolov5 repo v6+) checkpoints load without the yolov5 repo, onto our own module classes."""
import copy
import subprocess
import sys
import textwrap

import pytest
import torch

import yolo_prune  # noqa: F401
from yolo_prune.eval import profile
from yolo_prune.models import checkpoint, load
from yolo_prune.models.safe_pickle import allow_list_load
from yolo_prune.models.yolov5_legacy import (C3, SPPF, Conv, Detect, DetectionModel, YoloV5Detector,
                                             build_yolov5, load_yolov5_pt, yolov5_policy)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def v5n(request):
    from conftest import shared_dir
    shared = shared_dir()
    p = shared / "weights" / "yolov5n.pt" if shared else None
    if p is None or not p.is_file():
        pytest.skip("../shared/weights/yolov5n.pt missing (official yolov5n v6.1 checkpoint expected there)")
    return p, load_yolov5_pt(p)


def test_loads_official_yolov5n(v5n):
    _, det = v5n
    assert isinstance(det, YoloV5Detector) and not det.training
    assert (det.family, det.head_type) == ("yolov5", "anchor_v5")
    assert det.nc == 80 and len(det.names) == 80 and det.names[0] == "person" and det.names[79] == "toothbrush"
    assert det.strides == (8, 16, 32)
    assert det.anchors.shape == (3, 3, 2)
    assert det.anchors[0, 0].tolist() == [10.0, 13.0] and det.anchors[2, 2].tolist() == [373.0, 326.0]
    assert all(p.dtype == torch.float32 and p.requires_grad for p in det.parameters())
    stats = profile(det, 640)
    assert stats["params"] == 1_872_157  # 1.87 M
    assert abs(stats["gflops"] - 4.5) < 0.05
    assert det.head_modules() == ["model.model.24.m.0", "model.model.24.m.1", "model.model.24.m.2"]
    assert all(det.get_submodule(n).out_channels == 255 for n in det.head_modules())
    assert det.spec["family"] == "yolov5" and det.spec["base"]["anchors"][0] == [10, 13, 16, 30, 33, 23]
    assert "layers" not in det.spec


def test_forward_shapes_and_decode(v5n):
    _, det = v5n
    x = torch.rand(2, 3, 96, 64)
    trainee = copy.deepcopy(det).train()  # train mode updates BN statistics: keep the shared model intact
    raw = trainee(x)
    assert [tuple(t.shape) for t in raw] == [(2, 3, 12, 8, 85), (2, 3, 6, 4, 85), (2, 3, 3, 2, 85)]
    raw[0].sum().backward()
    assert trainee.model.model[0].conv.weight.grad is not None
    with torch.no_grad():
        y = det(x)
        raw = det.model(x)
    assert y.shape == (2, 3 * (12 * 8 + 6 * 4 + 3 * 2), 84)
    assert float(y[..., 4:].min()) >= 0 and float(y[..., 4:].max()) <= 1
    # hand-decode one cell of level 1, anchor 2 (yolov5 formulas)
    s = raw[1][1, 2, 4, 3].sigmoid()
    idx = 3 * 12 * 8 + (2 * 6 * 4 + 4 * 4 + 3)
    cx = (s[0] * 2 - 0.5 + 3) * 16
    w = (s[2] * 2) ** 2 * det.anchors[1, 2, 0]
    assert torch.allclose(y[1, idx, 0], cx) and torch.allclose(y[1, idx, 2], w)
    assert torch.allclose(y[1, idx, 4:], s[5:] * s[4])


def test_yaml_rebuild_reproduces_unpickled_model_exactly(v5n):
    path, det = v5n
    ckpt = allow_list_load(path, yolov5_policy)
    unpickled = ckpt["model"].float().eval()
    assert type(unpickled) is DetectionModel  # models.yolo.Model landed on our class
    assert type(unpickled.model[2]) is C3 and type(unpickled.model[9]) is SPPF and type(unpickled.model[0]) is Conv
    assert type(unpickled.model[24]) is Detect
    fresh = build_yolov5(unpickled.yaml, names=unpickled.names).eval()
    fresh.model.load_state_dict(unpickled.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = unpickled(x), fresh.model(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    with torch.no_grad():
        assert torch.equal(fresh(x), det(x))


def test_checkpoint_round_trip_is_bit_identical(v5n, tmp_path):
    _, det = v5n
    p = checkpoint.save(det, tmp_path / "v5n.pt", meta={"note": "round trip"})
    det2 = load(p)
    assert isinstance(det2, YoloV5Detector)
    assert det2.names == det.names and det2.strides == det.strides and torch.equal(det2.anchors, det.anchors)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(det(x), det2(x))


def test_models_load_dispatches_legacy_pt(v5n):
    path, det = v5n
    det2 = load(path)
    assert isinstance(det2, YoloV5Detector)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(det(x), det2(x))


def test_loads_without_the_yolov5_repo(v5n, tmp_path):
    """A fresh interpreter where importing 'models' (the yolov5 repo) is impossible still loads the file."""
    path, _ = v5n
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "models" or name.startswith(("models.", "yolov5")):
                    raise ImportError("yolov5 repo must not be used: " + name)
        sys.meta_path.insert(0, Block())
        from yolo_prune.models import load
        det = load({str(path)!r})
        assert det.family == "yolov5" and det.nc == 80
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_build_from_yaml_dict_with_nc_and_names():
    cfg = {"nc": 80, "depth_multiple": 0.33, "width_multiple": 0.125,
           "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
           "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
                        [-1, 1, "Conv", [256, 3, 2]], [-1, 1, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
                        [-1, 1, "SPPF", [512, 5]]],
           "head": [[-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 4], 1, "Concat", [1]],
                    [-1, 1, "C3", [256, False]], [-1, 1, "Conv", [256, 3, 2]], [[-1, 6], 1, "Concat", [1]],
                    [-1, 1, "C3", [512, False]], [[9, 12], 1, "Detect", ["nc", "anchors"]]]}
    det = build_yolov5(cfg, names=["a", "b", "c"])
    assert det.nc == 3 and det.spec["base"]["nc"] == 3 and det.strides == (8, 16)
    assert det.model.model[-1].m[0].out_channels == 3 * 8
    det.train()
    raw = det(torch.rand(1, 3, 64, 64))
    assert [tuple(t.shape) for t in raw] == [(1, 3, 8, 8, 8), (1, 3, 4, 4, 8)]
    with pytest.raises(ValueError, match=r"layer 1: module 'Evil'"):
        build_yolov5({**cfg, "backbone": [cfg["backbone"][0], [-1, 1, "Evil", [1]]] + cfg["backbone"][2:]})
    with pytest.raises(ValueError, match="'anchors' is missing"):
        build_yolov5({k: v for k, v in cfg.items() if k != "anchors"})
    with pytest.raises(ValueError, match="activation"):
        build_yolov5({**cfg, "activation": "__import__('os').system('true')"})


@pytest.mark.slow
def test_pruned_yolov5n_checkpoint_reload_is_bit_identical(v5n, tmp_path):
    from yolo_prune.prune import prune_model

    det = copy.deepcopy(v5n[1])
    prune_model(det, ratio=0.3, imgsz=64)
    det.eval()
    assert profile(det, 640)["params"] < 1_872_157
    p = checkpoint.save(det, tmp_path / "pruned.pt")
    det2 = load(p)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(det(x), det2(x))
    assert [m.out_channels for m in det2.modules() if isinstance(m, torch.nn.Conv2d)] == \
        [m.out_channels for m in det.modules() if isinstance(m, torch.nn.Conv2d)]
