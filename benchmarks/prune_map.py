#!/usr/bin/env python
"""mAP of a model pruned WITHOUT fine-tuning, per criterion, MACs target and compensation mode.

  python benchmarks/prune_map.py --weights ../shared/weights/yolov5n.pt --coco ../shared/coco128 \
      --targets 0.95 0.9 0.8 --out runs/bench/prune_map

Writes a markdown table (stdout and OUT/prune_map.md) and OUT/prune_map.json.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from yolo_prune.eval.coco import evaluate  # noqa: E402
from yolo_prune.models import load  # noqa: E402
from yolo_prune.prune import prune_model  # noqa: E402
from yolo_prune.train.taylor import taylor_grad_fn  # noqa: E402
from yolo_prune.versions import versions  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="../shared/weights/yolov5n.pt")
    p.add_argument("--coco", default="../shared/coco128")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.9, 0.8])
    p.add_argument("--criteria", nargs="+", default=["bn", "l1", "l2", "fpgm", "taylor", "random"])
    p.add_argument("--compensate", nargs="+", default=["bias", "off"])
    p.add_argument("--round-to", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/bench/prune_map")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    coco = Path(a.coco)
    ev = dict(images=coco / "images" / "val2017", ann=coco / "annotations" / "instances_val2017.json",
              imgsz=a.imgsz, batch=16, verbose=False, threads=a.threads)
    base = load(a.weights)
    t0 = time.time()
    rows = [{"criterion": "-", "target_macs": 1.0, "compensate": "-", "macs_ratio": 1.0,
             "mAP50-95": evaluate(base, **ev)["mAP50-95"]}]
    grad_fn = taylor_grad_fn(coco / "data.yaml", imgsz=320)
    jobs = [(t, c, m) for t in a.targets for c in a.criteria for m in a.compensate]
    for t, c, m in tqdm(jobs, desc="prune+eval"):
        det = copy.deepcopy(base)
        rep = prune_model(det, target_macs=t, criterion=c, compensate=m, round_to=a.round_to, imgsz=a.imgsz,
                          verify=False, grad_fn=grad_fn if c == "taylor" else None)
        r = evaluate(det, **ev)
        rows.append({"criterion": c, "target_macs": t, "compensate": m, "macs_ratio": rep["macs_ratio"],
                     "removed_channels": rep["removed_channels"], "mAP50-95": r["mAP50-95"], "mAP50": r["mAP50"]})
    lines = ["| target MACs | criterion | compensation | MACs ratio | mAP50-95 |", "|---|---|---|---|---|"]
    lines += [f"| {r['target_macs']:.2f} | {r['criterion']} | {r['compensate']} | {r['macs_ratio']:.3f} | "
              f"{r['mAP50-95']:.4f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prune_map.md").write_text(text + "\n")
    (out / "prune_map.json").write_text(json.dumps({"rows": rows, "args": vars(a), "versions": versions(),
                                                    "seconds": time.time() - t0}, indent=1))


if __name__ == "__main__":
    main()
