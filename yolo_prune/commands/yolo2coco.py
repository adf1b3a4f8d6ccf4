#!/usr/bin/env python
"""Convert YOLO-format labels to a COCO detection json (image sizes read from the files).

    python tools/yolo2coco.py --data D.yaml [--split val] --out instances_val.json
    python tools/yolo2coco.py --images DIR [--labels DIR] --names a b c --out instances.json
"""
import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="YOLO data yaml (gives images and names)")
    ap.add_argument("--split", default="val", help="split of --data to convert")
    ap.add_argument("--images", default=None, help="image folder or .txt list (instead of --data)")
    ap.add_argument("--labels", default=None, help="label folder (default: images -> labels path rule)")
    ap.add_argument("--names", nargs="+", default=None, help="class names in index order (with --images)")
    ap.add_argument("--out", required=True, help="output json path")
    args = ap.parse_args(argv)

    from yolo_prune.data.coco import convert_yolo_dataset

    try:
        coco = convert_yolo_dataset(args.out, data=args.data, split=args.split, images=args.images,
                                    labels=args.labels, names=args.names)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
          f"{len(coco['categories'])} categories")
    return 0


if __name__ == "__main__":
    sys.exit(main())
