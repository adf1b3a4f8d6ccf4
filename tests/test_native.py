"""Native outputs beside our .pt: the yolov5 repo's pickle layout, and one helper used by every stage."""
import pytest
import torch
import yaml

from yolo_prune.models import load
from yolo_prune.models.checkpoint import save
from yolo_prune.models.native import write_native
from yolo_prune.models.safe_pickle import pickle_globals
from yolo_prune.models.spec import CompensatedConv2d, record_layers, set_module
from yolo_prune.models.yolov5_legacy import build_yolov5, save_yolov5_pt

V5_TINY = yaml.safe_load("""
nc: 2
depth_multiple: 0.33
width_multiple: 0.25
anchors: [[10,13, 16,30, 33,23], [30,61, 62,45, 59,119]]
backbone: [[-1, 1, Conv, [64, 6, 2, 2]], [-1, 1, Conv, [128, 3, 2]], [-1, 1, C3, [128]], [-1, 1, Conv, [256, 3, 2]],
           [-1, 1, SPPF, [256, 5]]]
head: [[-1, 1, nn.Upsample, [None, 2, nearest]], [[-1, 2], 1, Concat, [1]], [-1, 1, C3, [128, False]],
       [[7, 4], 1, Detect, [nc, anchors]]]
""")


@pytest.fixture(scope="module")
def pruned_v5():
    from yolo_prune.prune import prune_model

    det = build_yolov5(V5_TINY, names=["a", "b"])
    full = sum(p.numel() for p in det.parameters())
    prune_model(det, ratio=0.4, imgsz=64)
    assert sum(p.numel() for p in det.parameters()) < full
    return det.eval()


def test_yolov5_pt_references_only_yolov5_classes_and_reloads_at_pruned_widths(tmp_path, pruned_v5):
    p = save_yolov5_pt(pruned_v5, tmp_path / "p.yolov5.pt")
    found = pickle_globals(p)
    ours = {g for g in found if g.startswith("models.")}
    assert ours <= {"models.common.Conv", "models.common.C3", "models.common.Bottleneck", "models.common.SPPF",
                    "models.common.Concat", "models.yolo.Detect", "models.yolo.Model"}
    assert {"models.yolo.Model", "models.yolo.Detect", "models.common.C3"} <= ours
    assert not any(g.startswith("yolo_prune") for g in found)
    back = load(p)  # our allow-list loader
    assert record_layers(back.model) == record_layers(pruned_v5.model)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(back(x), pruned_v5(x))


def test_write_native_per_family_and_refusal(tmp_path, pruned_v5):
    r = write_native(pruned_v5, save(pruned_v5, tmp_path / "best.pt"))
    assert r["yolov5"] == str(tmp_path / "best.yolov5.pt") and r["files"] == [r["yolov5"]] and not r["notes"]
    comp = build_yolov5(V5_TINY)
    name = "model.model.1.conv"
    set_module(comp, name, CompensatedConv2d.from_conv(comp.get_submodule(name)))
    r = write_native(comp, tmp_path / "comp.pt")
    assert r["yolov5"] is None and "CompensatedConv2d" in r["notes"][0]
    assert not (tmp_path / "comp.yolov5.pt").exists()
    with pytest.raises(ValueError, match="needs a legacy yolov5 Detector"):
        from yolo_prune.models.ultralytics import load_yaml_model
        save_yolov5_pt(load_yaml_model("yolov8n.yaml", nc=2), tmp_path / "x.yolov5.pt")
