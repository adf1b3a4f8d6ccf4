"""Our evaluator vs ultralytics' val on the same pruned ultralytics model (slow: it trains a model first)."""
import pytest

from yolo_prune.data.synthetic import make_synthetic


@pytest.mark.slow
def test_our_eval_matches_ultralytics_val_on_pruned_model(tmp_path):
    from ultralytics import YOLO

    from yolo_prune.eval.coco import evaluate
    from yolo_prune.integrations.ultralytics import PrunedTrainer
    from yolo_prune.models import load
    from yolo_prune.models.ultralytics import load_yaml_model, save_ultralytics_pt
    from yolo_prune.prune import prune_model
    from yolo_prune.train import train

    data = make_synthetic(tmp_path / "d", n_train=192, n_val=48, imgsz=128, nc=3, seed=0)
    det = load_yaml_model("yolov8n.yaml", nc=3)
    det.names = {0: "circle", 1: "square", 2: "triangle"}
    train(det, str(data), out_dir=tmp_path / "base", overrides={
        "epochs": 10, "imgsz": 128, "batch": 8, "optimizer": "AdamW", "lr0": 0.002, "workers": 0, "seed": 0,
        "val": False})
    prune_model(det.eval(), target_macs=0.6, imgsz=128)
    p = save_ultralytics_pt(det, tmp_path / "p.ultralytics.pt")
    YOLO(str(p)).train(trainer=PrunedTrainer, data=str(data), epochs=3, imgsz=128, batch=8, nbs=8, workers=0,
                       device="cpu", optimizer="AdamW", lr0=0.00143, plots=False, val=False,
                       project=str(tmp_path), name="ft", exist_ok=True)
    best = tmp_path / "ft" / "weights" / "last.pt"
    ours = evaluate(load(best), data=str(data), imgsz=128, batch=16, conf=0.001, iou=0.6, verbose=False)
    theirs = YOLO(str(best)).val(data=str(data), imgsz=128, batch=16, conf=0.001, iou=0.6, device="cpu",
                                 plots=False, verbose=False, project=str(tmp_path), name="val")
    print(f"parity: ours mAP50-95 {ours['mAP50-95']:.4f} mAP50 {ours['mAP50']:.4f}; ultralytics val "
          f"{float(theirs.box.map):.4f} / {float(theirs.box.map50):.4f}")
    assert ours["mAP50-95"] > 0.05  # a model that detects something: the comparison has content
    # pycocotools (101-point interpolated AP, COCO area rules) vs ultralytics' continuous AP: ~0.001-0.005 apart
    assert abs(ours["mAP50-95"] - float(theirs.box.map)) < 0.01, (ours["mAP50-95"], float(theirs.box.map))
