"""Benchmark: yolov8n from scratch on the synthetic shapes set at imgsz 160 — time (wall and process CPU) until
val mAP50 >= target, and the full per-epoch curve.

python benchmarks/train_synthetic.py --out runs/bench_syn [--epochs 12] [--n-train 384] [--target 0.7] [--stop-at-target]
"""
import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.data.synthetic import make_synthetic  # noqa: E402
from yolo_prune.models import load  # noqa: E402
from yolo_prune.train import train  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)  # dataloader workers
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/bench_syn")
    p.add_argument("--data-dir", default="data/synthetic160")
    p.add_argument("--weights", default="yolov8n.yaml")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--n-train", type=int, default=384)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--target", type=float, default=0.7)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--stop-at-target", action="store_true", help="end the run at the first epoch that reaches it")
    args = p.parse_args()
    import yaml

    data = make_synthetic(args.data_dir, n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz, nc=3, seed=0)
    overrides = {"nbs": args.batch, "warmup_epochs": 1, "close_mosaic": 2, "workers": 1, "val_batch": 32}
    overrides.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    det = load(args.weights, nc=3)
    t0, c0 = time.time(), cpu_seconds()
    reached = {}

    def on_epoch_end(state):
        row = state.history[-1]
        row["wall_s"], row["cpu_s"] = time.time() - t0, cpu_seconds() - c0
        if not reached and row.get("mAP50", 0) >= args.target:
            reached.update(epoch=row["epoch"], wall_s=row["wall_s"], cpu_s=row["cpu_s"], mAP50=row["mAP50"])
            state.stop = args.stop_at_target

    res = train(det, data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, out_dir=args.out,
                overrides=overrides, hooks={"epoch_end": [on_epoch_end]})
    summary = {"reached_target": reached or None, "target_mAP50": args.target, "overrides": overrides,
               "epochs": args.epochs, "n_train": args.n_train, "n_val": args.n_val, "threads": os.cpu_count(),
               "history": res["history"], "load_avg_end": os.getloadavg()}
    Path(args.out, "bench.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
