#!/usr/bin/env python
"""COCO mAP of a model with pycocotools (yolov5 validation pipeline: rect letterbox, conf 0.001, NMS IoU 0.6).

    python tools/eval_coco.py --weights W --images DIR --ann instances.json --imgsz 640 [--batch 16]
                              [--device cpu] [--conf 0.001] [--iou 0.6] [--max-det 300] [--data D.yaml] --out DIR

Prints the 12 pycocotools stats, 'mAP50-95 x' and 'mAP50 x', and ms per image; writes DIR/predictions.json
and DIR/metrics.json.
"""
import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script from a checkout (python tools/x.py): use that checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help=".pt (yolo_prune, ultralytics, yolov5), model .yaml, darknet "
                                                     ".cfg/.weights or .onnx")
    ap.add_argument("--images", default=None, help="folder of images (default: the val split of --data)")
    ap.add_argument("--ann", default=None, help="COCO instances json (default: converted from --data labels)")
    ap.add_argument("--data", default=None, help="YOLO data yaml (path/train/val/names)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--conf", type=float, default=0.001)
    ap.add_argument("--iou", type=float, default=0.6)
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--max-images", type=int, default=None, help="evaluate an evenly spread subset")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all usable cores)")
    ap.add_argument("--out", default="runs/eval", help="folder for predictions.json and metrics.json")
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
