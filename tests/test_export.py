"""ONNX export: numerics vs PyTorch for every family, dynamic shapes, the sidecar, NMS output and bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export_helpers import TinyDetector, TinyNet, randomize_bn, tiny
from yolo_prune.export import ExportError, OrtDetector, ProviderUnavailableError, export_onnx
from yolo_prune.export import onnx as onnx_export

ROOT = Path(__file__).resolve().parents[1]
V4_CFG = ROOT / "cfg" / "yolov4-tiny.cfg"


def ort_vs_torch(det, path, shapes):
    """Max |ORT - PyTorch| over the given input shapes, through OrtDetector."""
    ort_det = OrtDetector(path)
    worst = 0.0
    for shape in shapes:
        x = torch.rand(*shape)
        with torch.no_grad():
            ref = det(x)
        got = ort_det(x)
        assert got.shape == ref.shape, (got.shape, ref.shape)
        assert ref[..., :4].std() > 0, "reference output is constant: the comparison would prove nothing"
        worst = max(worst, float((got - ref).abs().max()))
    return worst


# ------------------------------------------------------------------------------------------------ families
def _load_or_skip(path, **kw):
    from yolo_prune.models import load

    try:
        return load(path, **kw)
    except (ImportError, ModuleNotFoundError) as e:
        pytest.skip(f"loader for {path} not available yet: {e}")


def test_v8n_yaml_dynamic_two_batches_two_sizes_and_sidecar(tmp_path, capsys):
    det = randomize_bn(_load_or_skip("yolov8n.yaml", nc=3))
    out = tmp_path / "new" / "dir" / "v8n.onnx"  # missing folders are created
    report = export_onnx(det, out, imgsz=64, dynamic=True)
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and "max rel diff" in printed
    assert out.is_file() and report["verify"]["max_abs_diff"] < 1e-3
    assert len(report["verify"]["shapes"]) == 2  # the exporter itself checked a second batch and size
    # the exporter checked (1, 3, 64, 64) and (2, 3, 96, 128); a third batch size through OrtDetector
    assert ort_vs_torch(det, out, [(3, 3, 64, 64)]) < 1e-3

    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["inputs"][0] == {"name": "images", "shape": ["batch", 3, "height", "width"], "dtype": "float"}
    # ultralytics' own layout by default for the ultralytics family: (batch, 4 + nc, boxes)
    assert side["outputs"][0]["name"] == "output0" and side["outputs"][0]["shape"][1] == 4 + 3
    assert side["output_layout"] == "ultralytics"
    assert side["opset"] == 17 and side["strides"] == [8, 16, 32] and side["nc"] == 3
    assert side["names"] == {"0": "0", "1": "1", "2": "2"} or len(side["names"]) == 3
    assert side["macs"] > 0 and side["params"] == sum(p.numel() for p in det.parameters())
    assert side["family"] == "ultralytics" and side["dynamic"] is True

    ort_det = OrtDetector(out)
    assert ort_det.batch is None and ort_det.imgsz is None and ort_det.strides == (8, 16, 32)
    assert ort_det.names == det.names and ort_det.providers == ["CPUExecutionProvider"]


def test_yolov5n_legacy_checkpoint(tmp_path, yolov5n_pt):
    det = _load_or_skip(yolov5n_pt)
    out = tmp_path / "v5n.onnx"
    report = export_onnx(yolov5n_pt, out, imgsz=64)  # from the path: source recorded
    assert report["source"] == str(yolov5n_pt) and report["family"] == "yolov5"
    assert report["verify"]["max_abs_diff"] < 1e-3
    assert ort_vs_torch(det.float(), out, [(1, 3, 64, 64)]) < 1e-3
    ort_det = OrtDetector(out)
    assert ort_det.names[0] == "person" and ort_det.imgsz == (64, 64) and ort_det.batch == 1


def test_v4_tiny_cfg_with_nms(tmp_path):
    if not V4_CFG.is_file():
        pytest.skip(f"{V4_CFG} not written yet")
    det = randomize_bn(_load_or_skip(V4_CFG))
    out = tmp_path / "v4.onnx"
    report = export_onnx(det, out, imgsz=64, batch=2, nms=True, nms_conf=0.3, nms_iou=0.5)
    assert report["verify"]["max_abs_diff"] < 1e-3 and report["family"] == "darknet"
    assert [o["name"] for o in report["outputs"]] == ["output0", "detections"]
    assert report["outputs"][1]["shape"][1] == 7

    import onnxruntime as ort

    x = torch.rand(2, 3, 64, 64)
    pred, dets = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = det(x)
    assert np.abs(pred - ref.numpy()).max() < 1e-3
    assert dets.ndim == 2 and dets.shape[1] == 7 and len(dets) > 0
    assert set(np.unique(dets[:, 0])) <= {0.0, 1.0}  # batch index
    assert np.all(dets[:, 6] > 0.3) and np.all(dets[:, 3] >= dets[:, 1]) and np.all(dets[:, 4] >= dets[:, 2])
    # each detection is a box of output0 in xyxy, with that box's class score
    b, c = dets[0, 0].astype(int), dets[0, 5].astype(int)
    cand = ref[b].numpy()
    xyxy = np.concatenate([cand[:, :2] - cand[:, 2:4] / 2, cand[:, :2] + cand[:, 2:4] / 2], 1)
    i = np.abs(xyxy - dets[0, 1:5]).sum(1).argmin()
    assert np.allclose(xyxy[i], dets[0, 1:5], atol=1e-3) and abs(cand[i, 4 + c] - dets[0, 6]) < 1e-4


def test_darknet_cfg_plus_weights(tmp_path):
    if not V4_CFG.is_file():
        pytest.skip(f"{V4_CFG} not written yet")
    from yolo_prune.models.darknet import write_weights

    det = randomize_bn(_load_or_skip(V4_CFG))
    weights = write_weights(det, tmp_path / "v4.weights")
    out = tmp_path / "v4w.onnx"
    report = export_onnx(V4_CFG, out, imgsz=64, weights=weights, verbose=False)
    assert report["source"] == f"{V4_CFG} + {weights}"
    assert ort_vs_torch(det, out, [(1, 3, 64, 64)]) < 1e-3  # the file's weights, not a fresh random init


def test_pruned_v8n_checkpoint(tmp_path):
    pytest.importorskip("yolo_prune.prune", reason="pruning engine not landed yet")
    from yolo_prune.models import checkpoint
    from yolo_prune.prune import prune_model

    from yolo_prune.eval import profile

    det = randomize_bn(_load_or_skip("yolov8n.yaml", nc=3))
    before = profile(det, 64)
    prune_model(det, ratio=0.5, imgsz=64)
    ckpt = checkpoint.save(det, tmp_path / "pruned.pt")
    out = tmp_path / "pruned.onnx"
    report = export_onnx(ckpt, out, imgsz=64)  # rebuilt from our checkpoint spec
    assert report["verify"]["max_abs_diff"] < 1e-3
    assert report["macs"] < before["macs"] and report["params"] < before["params"]
    assert ort_vs_torch(det, out, [(1, 3, 64, 64)]) < 1e-3


# ------------------------------------------------------------------------------------------------ mechanics
def test_static_batch_runs_other_batches_in_chunks(tmp_path):
    det = tiny()
    out = tmp_path / "b2.onnx"
    export_onnx(det, out, imgsz=32, batch=2, verbose=False)
    ort_det = OrtDetector(out, providers=["cpu"], threads=1)
    assert ort_det.batch == 2 and ort_det.imgsz == (32, 32)
    x = torch.rand(5, 3, 32, 32)
    assert (ort_det(x) - det(x)).abs().max() < 1e-4
    with pytest.raises(ValueError, match=r"fixed 32x32 input.*--dynamic"):
        ort_det(torch.rand(1, 3, 64, 64))


def test_metadata_props_when_sidecar_missing(tmp_path):
    out = tmp_path / "m.onnx"
    export_onnx(tiny(nc=3), out, imgsz=32, verbose=False)
    Path(str(out) + ".json").unlink()
    ort_det = OrtDetector(out)
    assert ort_det.names == {0: "class0", 1: "class1", 2: "class2"} and ort_det.strides == (8,)
    assert ort_det.family == "test"


def test_simplify_keeps_numerics(tmp_path):
    det = tiny()
    report = export_onnx(det, tmp_path / "s.onnx", imgsz=32, simplify=True, verbose=False)
    assert report["simplify"] and report["verify"]["max_abs_diff"] < 1e-4


# ------------------------------------------------------------------------------------------------ bad input
def test_opset_too_old_for_an_op(tmp_path):
    with pytest.raises(ExportError, match=r"opset 13 is too old.*aten::triu.*newer --opset"):
        export_onnx(tiny("triu"), tmp_path / "t.onnx", imgsz=32, opset=13)
    assert not list(tmp_path.iterdir())  # nothing half-written
    export_onnx(tiny("triu"), tmp_path / "t.onnx", imgsz=32, opset=17, verbose=False)
    with pytest.raises(ExportError, match=r"opset 9 is too old.*Resize"):
        export_onnx(tiny(), tmp_path / "u.onnx", imgsz=32, opset=9)


def test_untraceable_model(tmp_path):
    with pytest.raises(ExportError, match=r"does not depend on its input.*froze"):
        export_onnx(tiny("numpy"), tmp_path / "n.onnx", imgsz=32)

    class NoTensor(TinyDetector):
        def decode(self, raw):
            return {"boxes": raw}

    bad = NoTensor(TinyNet(2), {0: "a", 1: "b"}, [8]).eval()
    with pytest.raises(ExportError, match=r"eval forward must return \(B, N, 4\+nc=6\), found dict"):
        export_onnx(bad, tmp_path / "d.onnx", imgsz=32)
    assert not list(tmp_path.iterdir())


def test_unloadable_checkpoint_path(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="broken.pt"):
        export_onnx(bad, tmp_path / "x.onnx", imgsz=32)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "x.onnx", imgsz=32)


def test_tolerance_failure_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "FP32_ATOL", -1.0)  # any difference, even 0, is now too much
    with pytest.raises(ExportError, match=r"max abs diff .*\(allowed -1.0 \+ 1e-05\*\|ref\|, box coord.*\)\. The file was not"):
        export_onnx(tiny(), tmp_path / "t.onnx", imgsz=32)
    assert not list(tmp_path.iterdir())


def test_missing_provider_requested_explicitly(tmp_path):
    out = tmp_path / "p.onnx"
    export_onnx(tiny(), out, imgsz=32, verbose=False)
    with pytest.raises(ProviderUnavailableError, match="FooExecutionProvider.*not include it"):
        OrtDetector(out, providers=["FooExecutionProvider"])
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the CUDA provider is not missing here")
    with pytest.raises(ProviderUnavailableError, match=r"CUDAExecutionProvider.*fell back to CPUExecutionProvider"):
        OrtDetector(out, providers=["cuda"])
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider"):
        export_onnx(tiny(), tmp_path / "q.onnx", imgsz=32, providers=["cuda"])


def test_half_on_cpu_refused_and_bad_arguments(tmp_path):
    with pytest.raises(ExportError, match="--half needs --device cuda"):
        export_onnx(tiny(), tmp_path / "h.onnx", imgsz=32, half=True)
    with pytest.raises(ExportError, match="multiple of the model's largest stride 8"):
        export_onnx(tiny(), tmp_path / "h.onnx", imgsz=30)
    with pytest.raises(ExportError, match=r"must end in \.onnx"):
        export_onnx(tiny(), tmp_path / "h.pt", imgsz=32)


def test_export_tool_cli(tmp_path):
    if not V4_CFG.is_file():
        pytest.skip(f"{V4_CFG} not written yet")
    out = tmp_path / "sub" / "v4.onnx"
    r = subprocess.run([sys.executable, "tools/export_onnx.py", "--weights", str(V4_CFG), "--imgsz", "64",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "max abs diff" in r.stdout and out.is_file() and Path(str(out) + ".json").is_file()


def test_export_tool_reports_bad_input_without_traceback(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_onnx_tool", ROOT / "tools" / "export_onnx.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--weights", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert "nope.pt" in err and "checkpoint not found" in err
    if V4_CFG.is_file() and not torch.cuda.is_available():
        assert tool.main(["--weights", str(V4_CFG), "--imgsz", "32", "--verify-providers", "cuda",
                          "--out", str(tmp_path / "y.onnx")]) == 1
        err = capsys.readouterr().err
        assert "CUDAExecutionProvider" in err and "Traceback" not in err and not (tmp_path / "y.onnx").exists()


# ------------------------------------------------------------------------------------------------ mAP parity
@pytest.mark.slow  # two COCO evaluations: ~20 s of CPU, around a minute on the shared 2-core machine
def test_onnx_map_matches_pytorch(tmp_path, yolov5n_pt, coco128):
    coco = pytest.importorskip("yolo_prune.eval.coco", reason="evaluator not landed yet")
    out = tmp_path / "v5n.onnx"
    export_onnx(yolov5n_pt, out, imgsz=320, dynamic=True, verbose=False)
    kw = dict(images=coco128 / "images" / "val2017", ann=coco128 / "annotations" / "instances_val2017.json",
              imgsz=320, batch=8, max_images=32, verbose=False)
    ref = coco.evaluate(str(yolov5n_pt), **kw)
    got = coco.evaluate(str(out), **kw)
    assert ref["images"] == got["images"] == 32
    assert ref["mAP50-95"] > 0.1
    assert abs(got["mAP50-95"] - ref["mAP50-95"]) < 0.002
    assert abs(got["mAP50"] - ref["mAP50"]) < 0.002


def test_tolerance_scales_coordinates_by_the_largest_one_but_not_scores():
    ref = np.zeros((1, 3, 7))
    ref[0, :, :4] = [[40.0, 30.0, 10.0, 12.0], [300.0, 310.0, 20.0, 25.0], [350.0, 5.0, 8.0, 9.0]]
    ref[0, :, 4:] = 0.5
    mask = onnx_export.coordinate_mask(ref.shape)
    coord_noise = ref.copy()
    coord_noise[0, 0, 0] += 2.9e-3  # summation-order noise on a small coordinate among 350 px ones
    assert not onnx_export._within_tolerance(coord_noise, ref, False)  # elementwise alone refuses it
    assert onnx_export._within_tolerance(coord_noise, ref, False, mask)
    score_noise = ref.copy()
    score_noise[0, 0, 5] += 2.9e-3  # the same error on a score is still refused
    assert not onnx_export._within_tolerance(score_noise, ref, False, mask)
    t = onnx_export.coordinate_mask((1, 7, 3), "ultralytics")
    assert t[0, :4].all() and not t[0, 4:].any()
