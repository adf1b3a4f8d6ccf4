#!/usr/bin/env python
"""End to end: baseline eval -> sparse training -> prune -> eval -> fine-tune -> eval -> ONNX -> benchmark -> report.

    python tools/pipeline.py                      # the demo: synthetic shapes, yolov8n from scratch, ~0.5x MACs
    python tools/pipeline.py [--config yolo_prune/defaults/pipeline.yaml] [--weights W] [--data D.yaml] [--ratio 0.5 |
        --target-macs F | --threshold T] [--sr 1e-3] [--epochs-sparse E1] [--epochs-finetune E2] [--imgsz S]
        [--batch B] [--device cpu] [--nc auto|N] [--set KEY=VALUE ...] --out runs/NAME

Each stage writes into its own subfolder of --out and is skipped when its inputs are unchanged, so re-running
the same command continues after a failure. Defaults: yolo_prune/defaults/pipeline.yaml; every flag overrides it, --set reaches
any key (train.lr0=0.001 for the nested training settings). Writes runs/NAME/report.md, report.json and PNGs.
"""
import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="yaml overriding yolo_prune/defaults/pipeline.yaml")
    ap.add_argument("--weights", default=None, help="model to prune (.pt/.cfg/.weights); none = train the demo "
                                                    "baseline")
    ap.add_argument("--data", default=None, help="YOLO data yaml or Pascal VOC folder; none = synthetic shapes")
    ap.add_argument("--nc", default=None, help="classes: auto (the data's, default) or N; weights with another "
                                              "class count get a new class head (every matching tensor kept)")
    ap.add_argument("--model", default=None, help="architecture yaml of the baseline trained without --weights")
    target = ap.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float, default=None, help="fraction of prunable channels to remove")
    target.add_argument("--target-macs", type=float, default=None, help="fraction of the baseline MACs to keep")
    target.add_argument("--threshold", type=float, default=None, help="remove channels scoring below this")
    ap.add_argument("--criterion", default=None, help="bn | l1 | l2 | fpgm | random")
    ap.add_argument("--sr", type=float, default=None, help="L1 strength on BN γ during sparse training")
    ap.add_argument("--epochs-baseline", type=int, default=None)
    ap.add_argument("--epochs-sparse", type=int, default=None, help="0 skips sparse training")
    ap.add_argument("--epochs-finetune", type=int, default=None, help="0 skips fine-tuning")
    ap.add_argument("--imgsz", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:0 (default: cuda when available)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="any yolo_prune/defaults/pipeline.yaml key")
    ap.add_argument("--out", default=None, help="run folder (default runs/demo)")
    args = ap.parse_args(argv)

    import yaml

    from yolo_prune.overrides import parse_set
    from yolo_prune.pipeline import resolve_config, run_pipeline

    overrides = {"weights": args.weights, "data": args.data, "model": args.model, "ratio": args.ratio,
                 "target_macs": args.target_macs, "threshold": args.threshold, "criterion": args.criterion,
                 "sr": args.sr, "epochs_baseline": args.epochs_baseline, "epochs_sparse": args.epochs_sparse,
                 "epochs_finetune": args.epochs_finetune, "imgsz": args.imgsz, "batch": args.batch,
                 "device": args.device, "out": args.out,
                 "nc": None if args.nc is None else yaml.safe_load(args.nc)}
    try:
        overrides.update(parse_set(args.set))
    except ValueError as e:
        ap.error(str(e))
    try:
        cfg = resolve_config(args.config, overrides)
        run_pipeline(cfg)
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
