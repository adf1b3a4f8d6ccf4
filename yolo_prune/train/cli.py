"""Flags shared by tools/sparse_train.py and tools/finetune.py (yolov5/ultralytics names)."""
from __future__ import annotations

import argparse

from ..overrides import parse_set


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="model: .pt (ours/ultralytics/yolov5), .yaml (from scratch), darknet .cfg")
    p.add_argument("--data", help="data yaml (ultralytics/yolov5 style: path, train, val, names)")
    p.add_argument("--nc", default="auto", help="classes of the trained model: auto (the data's) or N; a model "
                   "with another class count keeps every matching weight and gets a new class head")
    p.add_argument("--epochs", type=int)
    p.add_argument("--imgsz", type=int)
    p.add_argument("--batch", type=int, help="total batch size over all processes")
    p.add_argument("--device", help="cpu, 0, cuda:0 (default: cuda when available)")
    p.add_argument("--workers", type=int)
    p.add_argument("--optimizer", choices=["SGD", "AdamW"])
    p.add_argument("--lr0", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--val-max-images", type=int, help="validate on this many val images per epoch")
    p.add_argument("--no-val", action="store_true", help="skip per-epoch validation")
    p.add_argument("--cfg", help="yaml of training hyperparameters overriding the defaults "
                                  "(yolo_prune/defaults/train.yaml)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="any training key (yolo_prune/defaults/train.yaml), e.g. --set mosaic=0 close_mosaic=2")
    p.add_argument("--out", required=False, help="run folder (last.pt, best.pt, results.csv, gamma_hist.png)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt")


def overrides_from_args(args: argparse.Namespace, extra: dict | None = None) -> dict:
    out = {"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "device": args.device,
           "workers": args.workers, "optimizer": args.optimizer, "lr0": args.lr0, "seed": args.seed,
           "val_max_images": args.val_max_images}
    if args.no_val:
        out["val"] = False
    try:
        out.update(parse_set(args.set))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    out.update(extra or {})
    return {k: v for k, v in out.items() if v is not None}


def print_summary(result: dict) -> None:
    last = result["history"][-1] if result["history"] else {}
    figures = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float))
    print(f"done: {result['epochs_done']} epochs in {result['train_s']:.0f} s -> {result['out_dir']}")
    if figures:
        print(f"last epoch: {figures}")
    print(f"weights: {result['last']} (last), {result['best']} (best)")
