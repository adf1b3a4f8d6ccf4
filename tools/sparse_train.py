"""Sparsity training (BN-γ L1, network slimming) or plain training with --sr 0.

python tools/sparse_train.py --weights W --data D.yaml --epochs E --imgsz S --batch B --sr 1e-3 \
    [--sr-schedule constant|linear|cosine] [--sr-warmup K] --out DIR [--resume DIR]
Multi-GPU: torchrun --nproc_per_node N tools/sparse_train.py ...
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.train import sparse_train  # noqa: E402
from yolo_prune.train.cli import add_common_args, overrides_from_args, print_summary  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--sr", type=float, help="L1 strength on BN γ (0 = plain training)")
    p.add_argument("--sr-schedule", choices=["constant", "linear", "cosine"])
    p.add_argument("--sr-warmup", type=int, help="epochs of linear sr ramp-up")
    args = p.parse_args(argv)
    overrides = overrides_from_args(args, {"sr": args.sr, "sr_schedule": args.sr_schedule,
                                           "sr_warmup": args.sr_warmup})
    if args.resume is None and args.out is None:
        p.error("--out DIR is required (or --resume DIR)")
    result = sparse_train(args.weights, args.data, out_dir=args.out, overrides=overrides, cfg_file=args.cfg,
                          resume_dir=args.resume)
    if result.get("gamma"):
        print("γ share: " + ", ".join(f"{k} {v:.1%}" for k, v in result["gamma"].items()))
    print_summary(result)


if __name__ == "__main__":
    try:
        main()
    except (KeyError, ValueError, FileNotFoundError) as e:  # bad input: the message says what and where
        sys.exit(f"error: {e.args[0] if e.args else e}")
