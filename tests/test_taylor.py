"""The Taylor criterion's gradient sources: labelled batches or, without labels, the model's own detections."""
import torch

from yolo_prune.models import load
from yolo_prune.prune.api import prune_model
from yolo_prune.train.taylor import grad_fn_for, pseudo_label_grad_fn, pseudo_labels


def _trained_like(cfg="yolov5n.yaml"):
    torch.manual_seed(0)
    det = load(cfg, nc=3)
    for m in det.modules():  # confident outputs somewhere, so that there are pseudo-labels at all
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_(0, 0.1)
    return det.eval()


def test_pseudo_labels_are_the_models_confident_detections_in_loader_format():
    det = _trained_like()
    x = torch.rand(2, 3, 64, 64)
    b = pseudo_labels(det, x, conf=0.0)
    n = len(b["cls"])
    assert n > 0 and b["bboxes"].shape == (n, 4) and b["batch_idx"].shape == (n,) and b["cls"].shape == (n, 1)
    assert set(b["batch_idx"].tolist()) <= {0.0, 1.0}
    assert float(b["bboxes"].min()) >= 0 and float(b["bboxes"].max()) <= 1  # normalised cx, cy, w, h
    assert set(b["cls"].view(-1).tolist()) <= {0.0, 1.0, 2.0}
    assert pseudo_labels(det, x, conf=1.01)["cls"].numel() == 0  # nothing above the threshold: no targets


def test_pseudo_label_gradients_leave_the_model_as_it_was():
    det = _trained_like()
    before = {k: v.clone() for k, v in det.state_dict().items()}
    pseudo_label_grad_fn(torch.rand(4, 3, 64, 64), batch=2, conf=0.0)(det)
    grads = [p.grad for p in det.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    after = det.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics included
    assert not det.training
    bn = next(m for m in det.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.train()  # a caller's mixed-mode model comes back exactly as it was, module by module
    pseudo_label_grad_fn(torch.rand(2, 3, 64, 64), batch=2, conf=0.0)(det)
    assert bn.training and sum(m.training for m in det.modules()) == 1


def test_taylor_prunes_without_labels_from_calibration_images(tmp_path):
    import numpy as np
    from PIL import Image
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    det = _trained_like()
    grad_fn = grad_fn_for("taylor", data=None, calib=tmp_path, calib_images=4, calib_imgsz=64, conf=0.0)
    assert grad_fn is not None and grad_fn_for("l2", calib=tmp_path) is None
    rep = prune_model(det, ratio=0.3, criterion="taylor", grad_fn=grad_fn, imgsz=64, round_to=1)
    assert rep["macs_ratio"] < 1.0


def test_pseudo_labels_with_no_detection_stop_with_what_to_pass():
    import pytest
    det = _trained_like()
    with pytest.raises(ValueError, match=r"detects nothing with confidence >= 1.01 on the 2 --calib images.*--data"):
        pseudo_label_grad_fn(torch.rand(2, 3, 64, 64), batch=2, conf=1.01)(det)


def test_the_prune_report_says_where_taylor_gradients_came_from(tmp_path):
    import json

    from yolo_prune.models.checkpoint import save
    from yolo_prune.prune.run import prune_checkpoint
    src = tmp_path / "m.pt"
    save(_trained_like(), src)
    grad_fn = pseudo_label_grad_fn(torch.rand(4, 3, 64, 64), batch=2, conf=0.0)
    rep = prune_checkpoint(src, tmp_path / "p.pt", ratio=0.3, criterion="taylor", grad_fn=grad_fn, imgsz=64,
                           round_to=1)
    info = json.loads((tmp_path / "p.json").read_text())["meta"]["gradients"]
    assert info["source"] == "pseudo-labels" and info["images"] == 4 and info["detections"] > 0
    assert rep["meta"]["gradients"] == info
    assert prune_checkpoint(src, tmp_path / "q.pt", ratio=0.3, criterion="l2", imgsz=64)["meta"]["gradients"] is None
