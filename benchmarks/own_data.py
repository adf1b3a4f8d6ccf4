#!/usr/bin/env python
"""Issue 11: the user's own model on the user's own data. M0 = the official COCO yolov5n trained on BCCD trainval
with our loop (new 3-class head, every other tensor transferred); m0 = its mAP50-95 on BCCD test (pycocotools).
Then one budget E for both arms, both run by tools/pipeline.py with its defaults (E, its split, the recipe):
(a) M0 fine-tuned plainly for E epochs (plain_arm: train), (b) sparse -> prune to --target-macs -> fine-tune.

  python benchmarks/own_data.py --data ../shared/bccd --m0-epochs 8 --out runs/bench/bccd

Writes OUT/m0/ (M0 training run), OUT/pipeline/ (report.md, report.json) and OUT/summary.json (m0, (a), (b),
ratios, MACs, ORT-CPU speed-up, stage wall times, versions).
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.versions import versions  # noqa: E402


def train_m0(weights, data, imgsz, epochs, out: Path) -> Path:
    """M0: yolov5's fine-tune recipe shape (SGD 0.01, momentum 0.937), one step per batch of 16, 1 warm-up epoch."""
    from yolo_prune.train import sparse_train

    if (out / "last.pt").is_file() and (out / "done.json").is_file():
        return out / "last.pt"
    r = sparse_train(weights, data, out_dir=out, overrides={
        "epochs": epochs, "imgsz": imgsz, "batch": 16, "nbs": 16, "sr": 0.0, "optimizer": "SGD", "lr0": 0.01,
        "momentum": 0.937, "warmup_epochs": 1.0, "close_mosaic": 2, "seed": 0})
    (out / "done.json").write_text(json.dumps({"epochs": r["epochs_done"], "train_s": r["train_s"]}))
    return out / "last.pt"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="../shared/weights/yolov5n.pt", help="COCO-pretrained start of M0")
    p.add_argument("--data", default="../shared/bccd", help="VOC folder or data yaml")
    p.add_argument("--m0", default=None, help="use this M0 instead of training one")
    p.add_argument("--m0-epochs", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--target-macs", type=float, default=0.5)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="pipeline overrides (cfg/pipeline.yaml keys, dotted for training sections); none = defaults")
    p.add_argument("--out", default="runs/bench/bccd")
    a = p.parse_args()
    out = Path(a.out)
    t0 = time.time()
    m0 = Path(a.m0) if a.m0 else train_m0(a.weights, a.data, a.imgsz, a.m0_epochs, out / "m0")
    t_m0 = time.time() - t0

    from yolo_prune.pipeline import resolve_config, run_pipeline

    import yaml

    extra = {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in a.set)}
    cfg = resolve_config(None, {"weights": str(m0), "data": a.data, "target_macs": a.target_macs,
                                "imgsz": a.imgsz, "plain_arm": "train", "out": str(out / "pipeline"), **extra})
    res = run_pipeline(cfg)
    rep = res["report"]
    rows = {r["stage"]: r for r in rep["rows"]}
    final = rep["rows"][-1]
    a_row = rows.get("plain arm (a)")
    summary = {
        "m0": rows["baseline"]["mAP50-95"], "a": a_row and a_row["mAP50-95"], "b": final["mAP50-95"],
        "b_over_m0": final["mAP50-95"] / rows["baseline"]["mAP50-95"],
        "b_over_a": a_row and final["mAP50-95"] / a_row["mAP50-95"],
        "macs_ratio": rep["numbers"]["macs_ratio"], "speedup_ort_cpu": rep["numbers"]["speedup"],
        "stages_s": {k: round(v["seconds"], 1) for k, v in rep["stages"].items()}, "m0_s": round(t_m0, 1),
        "rows": {k: {"mAP50-95": v["mAP50-95"], "mAP50": v["mAP50"], "macs": v["macs"]} for k, v in rows.items()},
        "config": {k: cfg_v for k, cfg_v in res["report"]["config"].items()
                   if k in ("epochs_sparse", "epochs_finetune", "sparsity", "sr", "plain_arm_epochs", "batch")},
        "verdict": rep["verdict"], "warning": rep["warning"], "versions": versions(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
