"""Fine-tune a pruned checkpoint (no sparsity; widths are kept), optionally distilling from the unpruned model.

python tools/finetune.py --weights PRUNED.pt --data D.yaml --epochs E --imgsz S --batch B --out DIR \
    [--teacher ORIG.pt --distill-weight 1.0] [--resume DIR]
"""
import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script from a checkout (python tools/x.py): use that checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.train import finetune  # noqa: E402
from yolo_prune.train.cli import add_common_args, overrides_from_args, print_summary  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--teacher", help="unpruned model for output distillation")
    p.add_argument("--distill-weight", type=float, help="weight of the distillation loss (default 1.0)")
    p.add_argument("--engine", choices=["ours", "ultralytics"], default="ours",
                   help="trainer: ours (default, every family) or ultralytics' own trainer with "
                        "yolo_prune.integrations.ultralytics.PrunedTrainer (ultralytics models; --set takes "
                        "ultralytics' argument names)")
    args = p.parse_args(argv)
    if args.resume is None and args.out is None:
        p.error("--out DIR is required (or --resume DIR)")
    overrides = overrides_from_args(args, {"distill_weight": args.distill_weight})
    result = finetune(args.weights, args.data, out_dir=args.out, overrides=overrides, cfg_file=args.cfg,
                      resume_dir=args.resume, teacher=args.teacher, engine=args.engine)
    print_summary(result)


if __name__ == "__main__":
    try:
        main()
    except (KeyError, ValueError, FileNotFoundError) as e:  # bad input: the message says what and where
        sys.exit(f"error: {e.args[0] if e.args else e}")
