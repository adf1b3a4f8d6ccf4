"""Inference path and COCO evaluation: NMS, letterbox round trip, category mapping, bad inputs, acceptance."""
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from yolo_prune.data.coco import (COCO80_NAMES, COCO80_TO_91, category_map, load_data_yaml, read_yolo_labels,
                                  yolo_to_coco)
from yolo_prune.eval.coco import evaluate, select_subset
from yolo_prune.eval.infer import (LetterboxLoader, fuse_conv_bn, grouped_nms, letterbox, non_max_suppression,
                                   rect_batch_shapes, resize_long_side, scale_back)

ROOT = Path(__file__).resolve().parents[1]


def _pred(boxes_xyxy, scores):
    """(1, N, 4 + nc) predictions from xyxy boxes and per-class scores."""
    b = torch.tensor(boxes_xyxy, dtype=torch.float32)
    xywh = torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)
    return torch.cat([xywh, torch.tensor(scores, dtype=torch.float32)], 1)[None]


# ---------------------------------------------------------------- NMS

def test_nms_class_aware_keeps_overlapping_boxes_of_different_classes():
    pred = _pred([[10, 10, 50, 50], [12, 12, 52, 52], [11, 11, 51, 51]],
                 [[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]])
    aware = non_max_suppression(pred, conf=0.1, iou=0.5)[0]
    assert sorted(aware[:, 5].tolist()) == [0.0, 1.0]  # box 3 suppressed by box 1 (same class)
    assert aware[:, 4].tolist() == pytest.approx([0.9, 0.8])
    agnostic = non_max_suppression(pred, conf=0.1, iou=0.5, agnostic=True)[0]
    assert len(agnostic) == 1 and agnostic[0, 4] == pytest.approx(0.9)


def test_nms_max_det_is_per_image_and_keeps_the_best():
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(10)]  # disjoint
    scores = [[0.1 + 0.05 * i] for i in range(10)]
    pred = torch.cat([_pred(boxes, scores)] * 2, 0)
    out = non_max_suppression(pred, conf=0.01, iou=0.5, max_det=3)
    assert [len(d) for d in out] == [3, 3]
    for d in out:
        assert d[:, 4].tolist() == pytest.approx([0.55, 0.5, 0.45])


def test_nms_multi_label_and_conf_threshold():
    pred = _pred([[0, 0, 10, 10]], [[0.6, 0.3, 0.001]])
    single = non_max_suppression(pred, conf=0.01, iou=0.5)[0]
    multi = non_max_suppression(pred, conf=0.01, iou=0.5, multi_label=True)[0]
    assert single[:, 5].tolist() == [0.0]
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0]  # 0.001 is below conf
    assert len(non_max_suppression(pred, conf=0.7, iou=0.5)[0]) == 0


def test_grouped_nms_matches_torchvision_batched_nms():
    import torchvision

    g = torch.Generator().manual_seed(1)
    xy = torch.rand(3000, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 5 + torch.rand(3000, 2, generator=g) * 40], 1)
    scores = torch.rand(3000, generator=g)
    groups = torch.randint(0, 30, (3000,), generator=g)
    ours = grouped_nms(boxes, scores, groups, 0.5, small=100)  # forces the per-segment path
    ref = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
    assert set(ours.tolist()) == set(ref.tolist())
    assert torch.all(scores[ours][:-1] >= scores[ours][1:])


def test_nms_rejects_bad_shape():
    with pytest.raises(ValueError, match="expected shape"):
        non_max_suppression(torch.zeros(2, 10), conf=0.1)


# ---------------------------------------------------------------- letterbox

@pytest.mark.parametrize("hw,shape", [((96, 128), (64, 64)), ((130, 70), (96, 64)), ((50, 50), (64, 64))])
def test_letterbox_and_scale_back_round_trip(hw, shape):
    h0, w0 = hw
    img = np.zeros((h0, w0, 3), np.uint8)
    box = [w0 * 0.25, h0 * 0.3, w0 * 0.75, h0 * 0.8]
    cv2.rectangle(img, (int(box[0]), int(box[1])), (int(box[2]) - 1, int(box[3]) - 1), (255, 255, 255), -1)
    small = resize_long_side(img, 64)
    assert max(small.shape[:2]) == 64
    out, _, pad = letterbox(small, shape, auto=False, scaleup=False)
    assert out.shape[:2] == shape
    if max(pad) >= 1:  # the padded border is grey 114
        assert out[0, 0].tolist() == [114, 114, 114] and out[-1, -1].tolist() == [114, 114, 114]
    gain = small.shape[0] / h0
    ys, xs = np.nonzero(out[..., 0] > 200)
    found = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 1.0, 0.0]], dtype=torch.float32)
    back = scale_back(found, gain, pad, (h0, w0))[0, :4].tolist()
    assert back == pytest.approx(box, abs=2.5 / gain)
    # the scaled-back box never leaves the image
    wild = scale_back(torch.tensor([[-50.0, -50, 500, 500, 1, 0]]), gain, pad, (h0, w0))[0, :4].tolist()
    assert wild == [0, 0, w0, h0]


def test_rect_batch_shapes_cover_each_image_and_are_stride_multiples():
    sizes = np.array([[640, 480], [480, 640], [640, 427], [500, 500], [640, 360]])
    order, shapes = rect_batch_shapes(sizes, 640, 2, 32, pad=0.5)
    assert sorted(order.tolist()) == list(range(5))
    ar = sizes[order, 1] / sizes[order, 0]
    assert list(ar) == sorted(ar)
    for i, (h, w) in enumerate(shapes):
        assert h % 32 == 0 and w % 32 == 0 and max(h, w) <= 640 + 32
        for k in order[i * 2:(i + 1) * 2]:
            sw, sh = sizes[k]
            r = 640 / max(sw, sh)
            assert sh * r <= h and sw * r <= w


def test_fuse_conv_bn_keeps_outputs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    fused = fuse_conv_bn(model, x)
    assert isinstance(fused[1], nn.Identity) and isinstance(model[1], nn.BatchNorm2d)  # original untouched
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- category mapping

def test_category_map_by_name_with_arbitrary_ids():
    cats = [{"id": 12, "name": "Dog"}, {"id": 3, "name": "traffic_light"}]
    assert category_map({0: "traffic light", 1: "dog"}, cats) == {0: 3, 1: 12}


def test_category_map_coco_fallback_without_categories():
    mapping = category_map(dict(enumerate(COCO80_NAMES)), None, ann_category_ids=[1, 18, 90])
    assert mapping[0] == 1 and mapping[79] == 90 and list(mapping.values()) == list(COCO80_TO_91)


def test_category_map_mismatch_fails_loudly():
    cats = [{"id": COCO80_TO_91[i], "name": n} for i, n in enumerate(COCO80_NAMES)]
    with pytest.raises(ValueError) as e:
        category_map({0: "circle", 1: "square", 2: "person"}, cats, source="instances.json")
    msg = str(e.value)
    assert "instances.json" in msg and "3 classes" in msg and "80 categories" in msg and "circle" in msg
    with pytest.raises(ValueError, match="categories"):
        category_map({0: "circle"}, None, ann_category_ids=[1])


# ---------------------------------------------------------------- evaluate on a tiny exact dataset

class BrightBox(nn.Module):
    """Detects the bounding box of pure-white pixels: a model whose answers are exact, to test the pipeline."""

    def __init__(self, names, cls=0):
        super().__init__()
        self.names, self.cls, self.strides = names, cls, (32,)
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        b, _, h, w = x.shape
        white = x.min(1).values > 0.9
        rows, cols = white.any(2), white.any(1)
        ar_h, ar_w = torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype)
        y1 = torch.where(rows, ar_h, float(h)).min(1).values
        y2 = torch.where(rows, ar_h + 1, 0.0).max(1).values
        x1 = torch.where(cols, ar_w, float(w)).min(1).values
        x2 = torch.where(cols, ar_w + 1, 0.0).max(1).values
        found = rows.any(1)
        scores = torch.zeros(b, len(self.names), dtype=x.dtype)
        scores[found, self.cls] = 0.9
        xywh = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1)
        return torch.cat([xywh, scores], 1)[:, None]


BOXES = {  # file -> (w, h, box xyxy or None); edges on even pixels so a 2x downscale is exact
    "000000000001.jpg": (128, 96, (20, 30, 60, 70)),
    "000000000002.png": (96, 128, (10, 40, 50, 100)),
    "000000000003.png": (128, 128, (64, 8, 120, 40)),
    "000000000004.png": (128, 64, None),  # an image without labels
}


def _write_dataset(root: Path, gray: str | None = "000000000002.png") -> tuple[Path, dict]:
    images = root / "images" / "val"
    labels = root / "labels" / "val"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    ann = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "box"}]}
    for i, (name, (w, h, box)) in enumerate(BOXES.items(), 1):
        img = np.zeros((h, w), np.uint8)
        if box:
            x1, y1, x2, y2 = box
            img[y1:y2, x1:x2] = 255
            ann["annotations"].append({"id": i, "image_id": i, "category_id": 7, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                       "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
            (labels / f"{Path(name).stem}.txt").write_text(
                f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n")
        cv2.imwrite(str(images / name), img if name == gray else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 100])
        ann["images"].append({"id": i, "file_name": name, "width": w, "height": h})
    if gray:
        assert cv2.imread(str(images / gray), cv2.IMREAD_UNCHANGED).ndim == 2
    return images, ann


def test_evaluate_exact_model_scores_one_and_writes_files(tmp_path):
    images, ann = _write_dataset(tmp_path)
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    model = BrightBox({0: "box"})
    r = evaluate(model, images, tmp_path / "ann.json", imgsz=64, batch=2, out=tmp_path / "out", verbose=False)
    assert r["mAP50-95"] > 0.99 and r["mAP50"] > 0.99
    assert len(r["stats"]) == 12 and r["images"] == 4 and r["predictions"] == 3
    assert set(r["speed_ms"]) == {"preprocess", "inference", "nms"}
    assert all(s[0] <= 2 and s[2] % 32 == 0 and s[3] % 32 == 0 for s in model.calls)  # rect batches
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {p["category_id"] for p in preds} == {7}  # class 0 -> json id 7 by name
    assert {p["image_id"] for p in preds} == {1, 2, 3}
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["mAP50-95"] == pytest.approx(r["mAP50-95"])
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temp files


def test_evaluate_empty_predictions_gives_zero(tmp_path):
    images, ann = _write_dataset(tmp_path)
    (tmp_path / "ann.json").write_text(json.dumps(ann))

    class Blind(BrightBox):
        def forward(self, x):
            return super().forward(x) * torch.tensor([1, 1, 1, 1, 0.0])

    r = evaluate(Blind({0: "box"}), images, tmp_path / "ann.json", imgsz=64, batch=4, out=tmp_path / "o",
                 verbose=False)
    assert r["mAP50-95"] == 0.0 and r["mAP50"] == 0.0 and r["predictions"] == 0
    assert json.loads((tmp_path / "o" / "predictions.json").read_text()) == []


def test_evaluate_unreadable_image_is_skipped_with_a_warning(tmp_path):
    images, ann = _write_dataset(tmp_path)
    (images / "000000000009.jpg").write_bytes(b"this is not a jpeg")
    ann["images"].append({"id": 9, "file_name": "000000000009.jpg", "width": 10, "height": 10})
    with pytest.warns(UserWarning, match="000000000009.jpg"):
        r = evaluate(BrightBox({0: "box"}), images, ann, imgsz=64, batch=4, verbose=False)
    assert r["images"] == 4 and r["mAP50-95"] > 0.99
    assert [Path(p).name for p, _ in r["skipped"]] == ["000000000009.jpg"]


def test_evaluate_json_without_categories(tmp_path):
    images, ann = _write_dataset(tmp_path, gray=None)
    del ann["categories"]
    for a in ann["annotations"]:
        a["category_id"] = 1  # COCO id of 'person'
    coco_model = BrightBox(dict(enumerate(COCO80_NAMES)))
    r = evaluate(coco_model, images, ann, imgsz=64, verbose=False)
    assert r["mAP50-95"] > 0.99  # standard 80->91 table
    with pytest.raises(ValueError, match="no 'categories'"):
        evaluate(BrightBox({0: "box"}), images, ann, imgsz=64, verbose=False)


def test_evaluate_from_data_yaml_and_max_images(tmp_path):
    _write_dataset(tmp_path)
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: images/val\nval: images/val\nnames: [box]\n")
    assert load_data_yaml(tmp_path / "data.yaml")["names"] == {0: "box"}
    coco = yolo_to_coco(tmp_path / "images" / "val", ["box"])
    assert len(coco["images"]) == 4 and len(coco["annotations"]) == 3
    assert coco["annotations"][0]["bbox"] == pytest.approx([20, 30, 40, 40])
    r = evaluate(BrightBox({0: "box"}), data=tmp_path / "data.yaml", imgsz=64, verbose=False)
    assert r["mAP50-95"] > 0.99 and r["images"] == 4
    sub = evaluate(BrightBox({0: "box"}), data=tmp_path / "data.yaml", imgsz=64, max_images=2, verbose=False)
    assert sub["images"] == 2
    assert select_subset(10, 3) == [0, 4, 9] and select_subset(3, None) == [0, 1, 2]


def test_bad_inputs_give_clear_messages(tmp_path):
    images, ann = _write_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        evaluate(BrightBox({0: "box"}), images, tmp_path / "missing.json", verbose=False)
    with pytest.raises(ValueError, match="none of the 4 images"):
        evaluate(BrightBox({0: "box"}), images, {"images": [{"id": 1, "file_name": "other.jpg"}]}, verbose=False)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 5 values"):
        read_yolo_labels(bad)
    (tmp_path / "d.yaml").write_text("train: images/val\nnames: [box]\n")
    with pytest.raises(ValueError, match="field 'val' is missing"):
        load_data_yaml(tmp_path / "d.yaml")


def test_loader_reads_grayscale_as_three_channels(tmp_path):
    images, _ = _write_dataset(tmp_path)
    loader = LetterboxLoader(sorted(images.iterdir()), imgsz=64, batch=4, rect=False)
    (batch,) = list(loader)
    assert batch.images.shape == (4, 3, 64, 64) and batch.images.dtype == torch.uint8


# ---------------------------------------------------------------- real model families (random weights)

@pytest.mark.parametrize("model", ["yolov8n.yaml", "cfg/yolov4-tiny.cfg"])
def test_evaluate_runs_on_each_family(tmp_path, model):
    from yolo_prune.models import load

    try:
        det = load(model if model.endswith(".yaml") else ROOT / model, nc=1)
    except ImportError as e:
        pytest.skip(f"{model}: loader not available yet ({e})")
    det.names = {0: "box"}
    images, ann = _write_dataset(tmp_path)
    r = evaluate(det, images, ann, imgsz=64, batch=2, verbose=False, max_images=2)
    assert 0.0 <= r["mAP50-95"] <= 1.0 and r["images"] == 2


# ---------------------------------------------------------------- acceptance

def test_acceptance_yolov5n_coco128(yolov5n_pt, coco128, tmp_path):
    t = time.perf_counter()
    r = evaluate(yolov5n_pt, coco128 / "images" / "val2017", coco128 / "annotations" / "instances_val2017.json",
                 imgsz=640, batch=16, out=tmp_path, verbose=False)
    assert r["images"] == 128
    assert abs(r["mAP50-95"] - 0.3443) <= 0.005, r["mAP50-95"]
    assert abs(r["mAP50"] - 0.5274) <= 0.005, r["mAP50"]
    print(f"acceptance: mAP50-95 {r['mAP50-95']:.4f} mAP50 {r['mAP50']:.4f} in {time.perf_counter() - t:.1f} s, "
          f"speed {r['speed_ms']}")


def test_eval_coco_tool_prints_the_metrics(tmp_path, capsys):
    import importlib.util

    from yolo_prune.models import load
    from yolo_prune.models.checkpoint import save

    det = load(ROOT / "cfg" / "yolov4-tiny.cfg", nc=1)
    det.names = {0: "box"}
    save(det, tmp_path / "m.pt")
    _write_dataset(tmp_path / "ds")
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path / 'ds'}\nval: images/val\nnames: [box]\n")
    spec = importlib.util.spec_from_file_location("eval_coco_tool", ROOT / "tools" / "eval_coco.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rc = tool.main(["--weights", str(tmp_path / "m.pt"), "--data", str(tmp_path / "data.yaml"), "--imgsz", "64",
                    "--batch", "2", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in printed
    lines = {ln.split()[0]: ln.split()[1] for ln in printed.splitlines() if ln.startswith("mAP")}
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert float(lines["mAP50-95"]) == pytest.approx(metrics["mAP50-95"], abs=1e-4)
    assert float(lines["mAP50"]) == pytest.approx(metrics["mAP50"], abs=1e-4)
    assert "ms inference" in printed
    rc = tool.main(["--weights", str(tmp_path / "m.pt"), "--images", str(tmp_path), "--ann",
                    str(tmp_path / "none.json"), "--out", str(tmp_path / "o2")])
    assert rc == 2 and "none.json" in capsys.readouterr().err


@pytest.mark.parametrize("dynamic", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_evaluate_onnx_matches_torch(tmp_path, dynamic):
    from yolo_prune.export.onnx import export_onnx
    from yolo_prune.models import load

    det = load(ROOT / "cfg" / "yolov4-tiny.cfg", nc=1)
    det.names = {0: "box"}
    images, ann = _write_dataset(tmp_path)
    export_onnx(det, tmp_path / "m.onnx", imgsz=64, batch=1, dynamic=dynamic, verbose=False)
    kw = dict(imgsz=64, batch=2, verbose=False, conf=0.01)
    ours = evaluate(tmp_path / "m.onnx", images, ann, **kw)
    ref = evaluate(det, images, ann, **kw)
    assert ours["images"] == 4
    assert ours["settings"]["rect"] is dynamic  # a static export is letterboxed to its square input
    if dynamic:
        assert ours["stats"] == pytest.approx(ref["stats"], abs=1e-3)


def test_yolo2coco_tool_writes_the_json(tmp_path):
    import importlib.util

    _write_dataset(tmp_path)
    (tmp_path / "data.yaml").write_text("val: images/val\nnames: {0: box}\n")  # relative to the yaml
    spec = importlib.util.spec_from_file_location("yolo2coco_tool", ROOT / "tools" / "yolo2coco.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--data", str(tmp_path / "data.yaml"), "--out", str(tmp_path / "j" / "val.json")]) == 0
    coco = json.loads((tmp_path / "j" / "val.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "box", "supercategory": ""}]
    assert {im["file_name"]: (im["width"], im["height"]) for im in coco["images"]} == {
        n: (w, h) for n, (w, h, _) in BOXES.items()}
    assert sorted(a["image_id"] for a in coco["annotations"]) == [1, 2, 3]
    assert tool.main(["--images", str(tmp_path / "images"), "--out", str(tmp_path / "x.json")]) == 2
