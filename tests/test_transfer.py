"""Transfer to another class count (models.transfer, --nc): kept tensors, kept pruned widths, new-head init."""
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from yolo_prune.data.synthetic import make_synthetic
from yolo_prune.models import checkpoint, load, record_layers
from yolo_prune.models.transfer import set_num_classes
from yolo_prune.prune import prune_model

ROOT = Path(__file__).resolve().parents[1]
NAMES80 = ["person"] + [f"thing {i}" for i in range(1, 80)]


def _build(kind, tmp_path):
    if kind == "yolov8n":
        det = load("yolov8n.yaml", nc=80)
    elif kind == "yolov5n":
        from tests.test_train import YOLOV5N

        p = tmp_path / "yolov5n.yaml"
        p.write_text(yaml.safe_dump({**YOLOV5N, "nc": 80}))
        det = load(p, nc=80)
    else:
        det = load(ROOT / "cfg" / "yolov4-tiny.cfg", nc=80)
    det.names = dict(enumerate(NAMES80))
    det.spec["names"] = dict(det.names)
    return det


def _prior(kind, nc, stride, default_bound):
    """The family trainer's class-bias prior: exact for ultralytics, default init + shift for yolov5/darknet."""
    if kind == "yolov8n":
        return math.log(5 / nc / (640 / stride) ** 2), 1e-6
    return math.log(0.6 / (nc - 0.99999)), default_bound + 1e-6


@pytest.mark.parametrize("kind", ["yolov8n", "yolov5n", "yolov4-tiny"])
def test_transfer_keeps_weights_and_pruned_widths(kind, tmp_path):
    det = _build(kind, tmp_path)
    prune_model(det, ratio=0.3, imgsz=64, round_to=4)
    det.eval()
    before_layers = record_layers(det)
    before = {k: v.clone() for k, v in det.state_dict().items()}
    old_convs = {n: m for n, m in det.named_modules() if isinstance(m, torch.nn.Conv2d)}

    report = set_num_classes(det, 3, ["wbc", "Person", "rbc"])  # "person" matched by name (case ignored)

    assert det.nc == 3 and det.names == {0: "wbc", 1: "Person", 2: "rbc"}
    n_convs = {"yolov8n": 3, "yolov5n": 3, "yolov4-tiny": 2}[kind]
    assert len(report["replaced"]) == n_convs and report["matched"] == ["Person"]
    assert re.match(rf"transferred {report['kept']}/{report['tensors']} tensors, new head for 3 classes",
                    report["summary"])
    assert report["kept"] == report["tensors"] - len(report["partial"])
    after_layers = record_layers(det)
    na, nbox = (1, 0) if kind == "yolov8n" else (3, 5)
    for name, shape in before_layers.items():  # every width kept (pruned ones too), except the class outputs
        if name in report["replaced"]:
            assert after_layers[name]["in"] == shape["in"] and after_layers[name]["out"] == na * (nbox + 3)
        else:
            assert after_layers[name] == shape, name
    state = det.state_dict()
    for k, v in state.items():
        if k not in report["partial"]:
            assert torch.equal(v, before[k]), k
    modules = dict(det.named_modules())
    for name in report["replaced"]:
        old, new = old_convs[name], modules[name]
        stride = float(det.strides[int(name.split(".")[-2 if kind == "yolov8n" else -1])]) if kind != "yolov4-tiny" \
            else float(next(y.stride for n, y in zip(det.head_modules(), det.model.yolo_layers) if n == name))
        bound = 1 / math.sqrt(old.weight[0].numel())
        prior, tol = _prior(kind, 3, stride, bound)
        for a in range(na):
            o, n = a * (nbox + 80), a * (nbox + 3)
            assert torch.equal(new.weight[n:n + nbox], old.weight[o:o + nbox])  # box + objectness rows kept
            assert torch.equal(new.bias[n:n + nbox], old.bias[o:o + nbox])
            assert torch.equal(new.weight[n + nbox + 1], old.weight[o + nbox + 0])  # "Person" <- "person"
            for c in (0, 2):  # new classes: family init with the trainer's bias prior
                assert abs(float(new.bias[n + nbox + c].detach()) - prior) <= tol
                assert float(new.weight[n + nbox + c].detach().abs().max()) <= bound + 1e-6
    # the transferred model saves, reloads to the same outputs and trains with the family loss
    checkpoint.save(det, tmp_path / "t.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = det(x)
        assert y.shape[-1] == 4 + 3
        assert torch.allclose(load(tmp_path / "t.pt")(x), y, atol=1e-6)
    from yolo_prune.train.config import resolve
    from yolo_prune.train.losses import build_loss

    det.train()
    loss_fn = build_loss(det, resolve({"imgsz": 64}), 64)
    batch = {"batch_idx": torch.zeros(1), "cls": torch.tensor([[2.0]]), "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])}
    loss, _ = loss_fn(det(x), batch)
    loss.backward()
    assert modules[report["replaced"][0]].weight.grad is not None


def test_same_class_count_keeps_the_head():
    det = load("yolov8n.yaml", nc=3)
    before = {k: v.clone() for k, v in det.state_dict().items()}
    report = set_num_classes(det, 3, ["a", "b", "c"])
    assert report["replaced"] == [] and det.names == {0: "a", 1: "b", 2: "c"}
    assert all(torch.equal(v, before[k]) for k, v in det.state_dict().items())


def test_nc_flag_transfers_a_checkpoint_and_refuses_too_few(tmp_path, capsys):
    from tools.sparse_train import main

    syn = make_synthetic(tmp_path / "shapes", n_train=4, n_val=2, imgsz=64, nc=3, seed=1)
    det = load("yolov8n.yaml", nc=80)
    checkpoint.save(det, tmp_path / "coco.pt")
    common = ["--weights", str(tmp_path / "coco.pt"), "--data", str(syn), "--epochs", "1", "--imgsz", "64",
              "--batch", "2", "--no-val", "--workers", "0", "--set", "max_steps=1", "mosaic=0", "warmup_epochs=0"]
    main(common + ["--out", str(tmp_path / "run")])
    assert "transferred 349/355 tensors, new head for 3 classes" in capsys.readouterr().out
    trained = load(tmp_path / "run" / "last.pt")
    assert trained.nc == 3 and trained.names == load_names(syn)
    with pytest.raises(ValueError, match="nc: 2 is fewer than the 3 classes"):
        main(common + ["--nc", "2", "--out", str(tmp_path / "run2")])
    from yolo_prune.train.api import _load_model

    five = _load_model(tmp_path / "coco.pt", syn, nc=5)  # more classes than the data: extra names are generic
    assert five.names == {**load_names(syn), 3: "class3", 4: "class4"}
    assert _load_model("yolov8n.yaml", syn, nc=5).names == five.names  # built from a yaml: the same names


def load_names(data):
    from yolo_prune.data.sources import load_data_yaml

    return load_data_yaml(data)["names"]
