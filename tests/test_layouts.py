"""ONNX output layouts (ours / ultralytics / yolov5): verified against PyTorch, recorded, and scored alike."""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from export_helpers import randomize_bn
from yolo_prune.export import ExportError, OrtDetector, export_onnx
from yolo_prune.models.ultralytics import load_yaml_model
from yolo_prune.models.yolov5_legacy import build_yolov5

V5_TINY = yaml.safe_load("""
nc: 2
depth_multiple: 0.33
width_multiple: 0.25
anchors: [[10,13, 16,30, 33,23], [30,61, 62,45, 59,119]]
backbone: [[-1, 1, Conv, [64, 6, 2, 2]], [-1, 1, Conv, [128, 3, 2]], [-1, 1, C3, [128]], [-1, 1, Conv, [256, 3, 2]]]
head: [[[2, 3], 1, Detect, [nc, anchors]]]
""")


def _raw(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x.numpy()})[0]


@pytest.mark.parametrize("layout", ["ours", "ultralytics", "yolov5", None])
def test_yolov5_layouts(tmp_path, layout):
    det = randomize_bn(build_yolov5(V5_TINY)).eval()
    out = tmp_path / "m.onnx"
    export_onnx(det, out, imgsz=64, dynamic=True, layout=layout, verbose=False)
    side = json.loads(Path(str(out) + ".json").read_text())
    expect = layout or "yolov5"  # the family's own convention by default
    assert side["output_layout"] == expect
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ours = det(x)
    raw = _raw(out, x)
    n = ours.shape[1]
    assert raw.shape == {"ours": (2, n, 6), "ultralytics": (2, 6, n), "yolov5": (2, n, 7)}[expect]
    if expect == "yolov5":  # objectness and class probabilities apart; their product is our score
        assert np.allclose(raw[..., 5:] * raw[..., 4:5], ours[..., 4:].numpy(), atol=1e-4)
    assert torch.allclose(OrtDetector(out)(x), ours, atol=1e-3, rtol=1e-5)  # every layout reads back as ours


def test_ultralytics_layout_default_and_refusals(tmp_path):
    det = randomize_bn(load_yaml_model("yolov8n.yaml", nc=3)).eval()
    out = tmp_path / "v8.onnx"
    export_onnx(det, out, imgsz=64, nms=True, verbose=False)  # NMS reads the layout too
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = det(x)
    assert _raw(out, x).shape == (1, 7, ours.shape[1])  # (B, 4 + nc, N), as `yolo export` writes
    assert ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map["layout"] == "ultralytics"
    assert torch.allclose(OrtDetector(out)(x), ours, atol=1e-3, rtol=1e-5)
    with pytest.raises(ExportError, match="--layout yolov5 needs a legacy yolov5 model"):
        export_onnx(det, tmp_path / "bad.onnx", imgsz=64, layout="yolov5", verbose=False)
    with pytest.raises(ExportError, match="--layout: expected one of ours, ultralytics, yolov5, found 'xyz'"):
        export_onnx(det, tmp_path / "bad.onnx", imgsz=64, layout="xyz", verbose=False)
    assert not (tmp_path / "bad.onnx").exists()


def test_eval_scores_every_layout_alike(tmp_path):
    from yolo_prune.data.synthetic import make_synthetic
    from yolo_prune.eval.coco import evaluate

    data = make_synthetic(tmp_path / "d", n_train=1, n_val=4, imgsz=64, nc=2, seed=0)
    det = randomize_bn(build_yolov5(V5_TINY, names=["circle", "square"])).eval()
    for conv in det.model.model[-1].m:  # objectness and class logits near 0: scores ~0.25, boxes to compare
        conv.bias.data.zero_()
    results = {}
    for layout in ("ours", "ultralytics", "yolov5"):
        out = tmp_path / f"{layout}.onnx"
        export_onnx(det, out, imgsz=64, dynamic=True, layout=layout, verbose=False)
        r = evaluate(str(out), data=str(data), imgsz=64, batch=2, conf=0.01, verbose=False, out=tmp_path / layout)
        preds = json.loads((tmp_path / layout / "predictions.json").read_text())
        results[layout] = (r["mAP50-95"], r["mAP50"], r["predictions"],
                           [(d["image_id"], d["category_id"], [round(v, 1) for v in d["bbox"]]) for d in preds])
    assert results["ours"][2] > 0  # a random head still predicts boxes: the comparison has content
    assert results["ours"] == results["ultralytics"] == results["yolov5"]
