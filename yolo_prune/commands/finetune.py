"""Fine-tune a pruned checkpoint (no sparsity; widths are kept), optionally distilling from the unpruned model.

python tools/finetune.py --weights PRUNED.pt --data D.yaml --epochs E --imgsz S --batch B --out DIR \
    [--teacher ORIG.pt --distill-weight 1.0 [--distill-features 1.0]] [--resume DIR]

Without labels (distil the teacher's head outputs on unlabeled images; writes DIR/distilled.pt + .json):
python tools/finetune.py --weights PRUNED.pt --teacher ORIG.pt --unlabeled IMAGE_DIR|D.yaml --epochs 10 \
    --imgsz 320 --batch 16 --out DIR [--unlabeled-images 128] [--max-minutes 15] [--recalibrate-bn]
    [--distill-features 10]

--distill-features W also matches every BN output of the student to the teacher's kept channels; the pruned
checkpoint must come from prune.py (or a later stage), which stores which channels were removed.

--nc auto (default: the data's class count) or N: a model with another class count keeps every matching
tensor and gets a new class head ("transferred 343/349 tensors, new head for 3 classes"). --data also takes
a Pascal VOC folder.
"""
import sys
from pathlib import Path

from yolo_prune.flags import finetune_parser
from yolo_prune.train import finetune
from yolo_prune.train.cli import overrides_from_args, print_summary


def main(argv=None):
    p = finetune_parser(__doc__)
    args = p.parse_args(argv)
    if args.resume is None and args.out is None:
        p.error("--out DIR is required (or --resume DIR)")
    if args.unlabeled is not None:
        if args.teacher is None or args.weights is None:
            p.error("--unlabeled needs --weights PRUNED.pt and --teacher ORIG.pt")
        from yolo_prune.train.unlabeled import distill_unlabeled_checkpoint
        rep = distill_unlabeled_checkpoint(
            args.weights, args.teacher, args.unlabeled, Path(args.out) / "distilled.pt", epochs=args.epochs or 10,
            imgsz=args.imgsz or 320, batch=args.batch or 16, images=args.unlabeled_images,
            lr=args.lr0 or 2e-4, max_minutes=args.max_minutes, recalibrate_bn=args.recalibrate_bn,
            seed=args.seed or 0, device=args.device or "cpu", features=args.distill_features or 0.0)
        print(f"student-teacher gap {rep['gap_before']:.4f} -> {rep['gap_after']:.4f} after {rep['epochs']} epochs "
              f"({rep['seconds']:.0f} s); wrote {', '.join(rep['written'])}")
        return
    overrides = overrides_from_args(args, {"distill_weight": args.distill_weight,
                                           "distill_features": args.distill_features})
    result = finetune(args.weights, args.data, out_dir=args.out, overrides=overrides, cfg_file=args.cfg,
                      resume_dir=args.resume, teacher=args.teacher, nc=args.nc, engine=args.engine)
    print_summary(result)


if __name__ == "__main__":
    try:
        main()
    except (KeyError, ValueError, FileNotFoundError) as e:  # bad input: the message says what and where
        sys.exit(f"error: {e.args[0] if e.args else e}")
