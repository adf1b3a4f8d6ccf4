"""A pruned yolov8n fine-tuned by ultralytics' trainer (PrunedTrainer) vs by ours: same data, same budget.

The demo's chain (synthetic shapes, yolov8n baseline 14 epochs, sparse 2 epochs, prune to 0.5x MACs) makes the
pruned model; then both engines fine-tune it for the same epochs, batch, optimizer steps (nbs = batch: one step
per batch), optimizer, lr0, momentum, warm-up, close_mosaic, image size and seed, each with its own augmentation
defaults, and both validate on the full val set after every epoch. Scored with our evaluator (pycocotools) and
with ultralytics' val on the same files (the parity figures). Widths are checked unchanged.

    flock /tmp/yolo_prune_cpu.lock env OMP_NUM_THREADS=2 python benchmarks/ultralytics_engine.py --out runs/bench_engines
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_engines")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch per stage, 64 px")
    args = ap.parse_args(argv)
    quick = {"synthetic_train": 16, "synthetic_val": 8, "epochs_baseline": 1, "epochs_sparse": 1, "imgsz": 64} \
        if args.quick else {}
    imgsz = quick.get("imgsz", 160)

    from yolo_prune import offline

    offline.apply()
    from yolo_prune.eval.coco import evaluate
    from yolo_prune.models import load
    from yolo_prune.models.spec import record_layers
    from yolo_prune.pipeline import auto_lr0, resolve_config, run_pipeline
    from yolo_prune.train import finetune

    out = Path(args.out)
    t0 = time.time()
    cfg = resolve_config(overrides={"out": str(out / "pipe"), "epochs_finetune": 0, "bench_runs": 3,
                                    "bench_warmup": 1, **quick})
    run_pipeline(cfg, progress=False)
    chain_s = time.time() - t0
    pruned = out / "pipe" / "3_prune" / "pruned.pt"
    data = out / "pipe" / "0_data" / "data.yaml"
    if not data.is_file():
        data = next((out / "pipe" / "0_data").rglob("data.yaml"))
    widths = record_layers(load(pruned).model)
    common = {"epochs": args.epochs, "batch": 8, "imgsz": imgsz, "optimizer": "AdamW", "lr0": auto_lr0("AdamW", 3),
              "momentum": 0.9, "warmup_epochs": 0.0, "close_mosaic": 2, "workers": 2, "seed": 0, "device": "cpu"}
    res = {}

    t = time.time()
    ours = finetune(str(pruned), str(data), out_dir=out / "ft_ours", overrides={**common, "nbs": 8})
    rows = list(csv.DictReader((out / "ft_ours" / "results.csv").open()))
    res["ours"] = {"train_s": time.time() - t, "best": ours["best"],
                   "per_epoch_s": sum(float(r["epoch_s"]) for r in rows) / len(rows)}  # train + val per epoch

    t = time.time()
    ultra = finetune(str(pruned), str(data), out_dir=out / "ft_ultralytics", engine="ultralytics",
                     overrides={**common, "nbs": 8, "plots": False})
    rows = list(csv.DictReader((out / "ft_ultralytics" / "results.csv").open()))
    res["ultralytics"] = {"train_s": time.time() - t, "best": ultra["best"],
                          "per_epoch_s": float(rows[-1]["time"]) / len(rows)}  # cumulative train + val time

    from ultralytics import YOLO

    for name, r in res.items():
        best = Path(r["best"])
        det = load(best)
        r["widths_kept"] = record_layers(det.model) == widths
        r["params"] = sum(p.numel() for p in det.parameters())
        m = evaluate(det, data=str(data), imgsz=imgsz, batch=16, conf=0.001, iou=0.6, verbose=False)
        r["ours_map50_95"], r["ours_map50"] = m["mAP50-95"], m["mAP50"]
        v = YOLO(str(best.with_suffix(".ultralytics.pt"))).val(data=str(data), imgsz=imgsz, batch=16, conf=0.001,
                                                               iou=0.6, device="cpu", plots=False, verbose=False,
                                                               project=str(out / "val"), name=name, exist_ok=True)
        r["ultralytics_val_map50_95"], r["ultralytics_val_map50"] = float(v.box.map), float(v.box.map50)
    report = {"chain_s": chain_s, "common": common, "results": res, "total_s": time.time() - t0}
    (out / "bench_engines.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
