#!/usr/bin/env python
"""Detect objects and save the images with boxes and labels drawn.

    python tools/predict.py --weights W --source IMG_OR_DIR --imgsz 640 [--conf 0.25] [--iou 0.45] --out DIR
"""
import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help=".pt, model .yaml, darknet .cfg/.weights or .onnx")
    ap.add_argument("--source", required=True, help="an image, a folder of images or a .txt list")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--agnostic-nms", action="store_true", help="NMS across classes")
    ap.add_argument("--out", default="runs/predict", help="folder for the annotated images")
    args = ap.parse_args(argv)

    from yolo_prune.eval.infer import predict_to_images

    try:
        written = predict_to_images(args.weights, args.source, args.out, imgsz=args.imgsz, device=args.device,
                                    conf=args.conf, iou=args.iou, max_det=args.max_det, agnostic=args.agnostic_nms)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, n in written:
        print(f"{path}: {n} boxes")
    print(f"{len(written)} image(s) written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
