"""Sparsity training (BN-γ L1, network slimming) or plain training with --sr 0.

python tools/sparse_train.py --weights W --data D.yaml --epochs E --imgsz S --batch B --sr 1e-3 \
    [--sr-schedule constant|linear|cosine] [--sr-warmup K] --out DIR [--resume DIR]
python tools/sparse_train.py ... --sparsity targeted --target-macs 0.5 [--round-to 16] [--teacher W]
    then: python tools/prune.py --weights DIR/last.pt --target-macs 0.5 --round-to 16
Multi-GPU: torchrun --nproc_per_node N tools/sparse_train.py ...
--nc auto (default: the data's class count) or N: a model with another class count keeps every matching
tensor and gets a new class head ("transferred 343/349 tensors, new head for 3 classes"). --data also takes
a Pascal VOC folder.
"""
import sys

from yolo_prune.flags import sparse_train_parser
from yolo_prune.train import sparse_train
from yolo_prune.train.cli import overrides_from_args, print_summary


def main(argv=None):
    p = sparse_train_parser(__doc__)
    args = p.parse_args(argv)
    overrides = overrides_from_args(args, {"sr": args.sr, "sr_schedule": args.sr_schedule,
                                           "sr_warmup": args.sr_warmup, "sparsity": args.sparsity,
                                           "target_macs": args.target_macs, "target_round_to": args.round_to})
    if args.resume is None and args.out is None:
        p.error("--out DIR is required (or --resume DIR)")
    result = sparse_train(args.weights, args.data, out_dir=args.out, overrides=overrides, cfg_file=args.cfg,
                          resume_dir=args.resume, teacher=args.teacher, nc=args.nc)
    if result.get("gamma"):
        print("γ share: " + ", ".join(f"{k} {v:.1%}" for k, v in result["gamma"].items()))
    print_summary(result)


if __name__ == "__main__":
    try:
        main()
    except (KeyError, ValueError, FileNotFoundError) as e:  # bad input: the message says what and where
        sys.exit(f"error: {e.args[0] if e.args else e}")
