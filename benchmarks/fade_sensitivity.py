#!/usr/bin/env python
"""How much a dense model's mAP depends on the channels a cut would remove, and on stale BN statistics.

Scales the BN γ of the channels that pruning to --target-macs would remove (lowest |γ|, the targeted-sparsity
choice) by each factor, then scores the model (a) with its stored BN running statistics and (b) after
re-estimating them on --calib-batches un-augmented train batches (yolo_prune.train.bn.recalibrate_bn).

  python benchmarks/fade_sensitivity.py --weights ../shared/weights/yolov5n.pt \\
      --data ../shared/coco128/data.yaml --imgsz 320 --factors 1 0.95 0.857 0.5 0
"""
import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.data.yolo import build_dataset, build_loader, load_data_yaml  # noqa: E402
from yolo_prune.eval.coco import evaluate  # noqa: E402
from yolo_prune.models import load  # noqa: E402
from yolo_prune.train.bn import recalibrate_bn  # noqa: E402
from yolo_prune.train.config import resolve  # noqa: E402
from yolo_prune.train.sparsity import prunable_bns, targeted_masks  # noqa: E402
from yolo_prune.versions import versions  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--target-macs", type=float, default=0.5)
    p.add_argument("--round-to", type=int, default=16)
    p.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.95, 0.857, 0.5, 0.0])
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--out", default="runs/bench/fade_sensitivity.json")
    a = p.parse_args()
    model = load(a.weights)
    masks = targeted_masks(model, a.target_macs, a.round_to)
    n_all = sum(bn.num_features for bn in prunable_bns(model).values())
    n_sel = sum(int(m.sum()) for m in masks.values())
    print(f"{a.weights}: {n_sel} of {n_all} prunable channels would go at {a.target_macs}x MACs")
    data = load_data_yaml(a.data)
    calib = build_loader(build_dataset(data, "train", a.imgsz, a.batch, resolve({"imgsz": a.imgsz}), augment=False),
                         a.batch, 0, 0, shuffle=False)
    rows = []
    for f in a.factors:
        m = copy.deepcopy(model)
        bns = prunable_bns(m)
        with torch.no_grad():
            for name, mask in masks.items():
                bns[name].weight[mask] *= f
        stored = evaluate(m, data=a.data, imgsz=a.imgsz, batch=a.batch, verbose=False)["mAP50-95"]
        used = recalibrate_bn(m, calib, max_batches=a.calib_batches)
        recal = evaluate(m, data=a.data, imgsz=a.imgsz, batch=a.batch, verbose=False)["mAP50-95"]
        rows.append({"factor": f, "stored_stats": stored, "recalibrated": recal, "calib_batches": used})
        print(f"γ x {f:<6g} mAP50-95 stored stats {stored:.4f}   recalibrated ({used} batches) {recal:.4f}",
              flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "selected": n_sel, "prunable": n_all, "args": vars(a),
                                       "versions": versions()}, indent=1))


if __name__ == "__main__":
    main()
