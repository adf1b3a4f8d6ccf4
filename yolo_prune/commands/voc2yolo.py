#!/usr/bin/env python
"""Convert a Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/) into a YOLO dataset + data.yaml.

    python tools/voc2yolo.py VOC_ROOT --out DIR [--train trainval] [--val test] [--names a b c]
        [--difficult skip|keep] [--copy]

Writes DIR/images/<split>/ (symlinks to the VOC images, or copies with --copy), DIR/labels/<split>/*.txt,
DIR/annotations/instances_<split>.json (COCO, for tools/eval_coco.py), DIR/data.yaml and DIR/voc_report.json
(every dropped or clipped box, per file). Default splits: trainval/test when a test list exists, else train/val.
Any tool also takes the VOC folder itself as --data (converted once into runs/cache/voc/).
"""
import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="VOC folder (holds Annotations/, JPEGImages/, ImageSets/Main/)")
    ap.add_argument("--out", required=True, help="output folder of the YOLO dataset")
    ap.add_argument("--train", default=None, help="ImageSets/Main split to train on (default trainval or train)")
    ap.add_argument("--val", default=None, help="ImageSets/Main split to validate on (default test or val)")
    ap.add_argument("--names", nargs="+", default=None, help="class names in index order (default: the classes "
                                                             "the train annotations use, sorted)")
    ap.add_argument("--difficult", choices=["skip", "keep"], default="skip", help="objects marked difficult")
    ap.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    args = ap.parse_args(argv)

    from yolo_prune.data.voc import VocError, convert_voc, summary

    try:
        report = convert_voc(args.root, args.out, train=args.train, val=args.val, names=args.names,
                             difficult=args.difficult, mode="copy" if args.copy else "symlink")
    except (VocError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
