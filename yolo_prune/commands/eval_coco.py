#!/usr/bin/env python
"""COCO mAP of a model with pycocotools (yolov5 validation pipeline: rect letterbox, conf 0.001, NMS IoU 0.6).

    python tools/eval_coco.py --weights W --images DIR --ann instances.json --imgsz 640 [--batch 16]
                              [--device cpu] [--conf 0.001] [--iou 0.6] [--max-det 300] [--data D.yaml] --out DIR

Prints the 12 pycocotools stats, 'mAP50-95 x' and 'mAP50 x', and ms per image; writes DIR/predictions.json
and DIR/metrics.json.
"""
import sys
from pathlib import Path

from yolo_prune.flags import eval_coco_parser


def main(argv=None) -> int:
    ap = eval_coco_parser(__doc__)
    args = ap.parse_args(argv)

    from yolo_prune.eval.coco import evaluate

    try:
        evaluate(args.weights, images=args.images, ann=args.ann, data=args.data, imgsz=args.imgsz,
                 batch=args.batch, device=args.device, conf=args.conf, iou=args.iou, max_det=args.max_det,
                 out=args.out, max_images=args.max_images, threads=args.threads)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {Path(args.out) / 'predictions.json'} and {Path(args.out) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
