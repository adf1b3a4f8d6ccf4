#!/usr/bin/env python
"""INT8 static quantization (onnxruntime QDQ) of an exported fp32 detector, calibrated on real images.

    python tools/quantize.py --weights model.onnx --calib DATA_OR_DIR [--calib-images 64] [--per-channel]
        [--format qdq] [--keep-fp32 auto|N|none|unit,unit] [--sensitivity-images 8] --out model.int8.onnx

--calib: a data yaml (its train images), an image folder, a .txt list or one image; images are letterboxed as
the evaluator does. --keep-fp32 auto measures each unit's effect on the output (and its int8 latency) and keeps
the ones that hurt in fp32. Writes model.int8.onnx and model.int8.onnx.json (the fp32 sidecar plus a
'quantization' section); check it with tools/eval_coco.py and tools/benchmark.py.
"""
import sys

from yolo_prune.flags import quantize_parser


def main(argv=None) -> int:
    ap = quantize_parser(__doc__)
    args = ap.parse_args(argv)

    from yolo_prune.export.quantize import QuantizeError, quantize_onnx, sensitivity_markdown

    try:
        report = quantize_onnx(args.weights, args.out, args.calib, calib_images=args.calib_images,
                               per_channel=args.per_channel, fmt=args.format, keep_fp32=args.keep_fp32,
                               sensitivity_images=args.sensitivity_images, calibrate_method=args.calibrate_method,
                               reduce_range=args.reduce_range, latency_check=not args.no_latency_check,
                               imgsz=args.imgsz, threads=args.threads)
    except (QuantizeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(sensitivity_markdown(report))
    print(f"wrote {args.out} and {args.out}.json ({report['quantize_nodes']} QuantizeLinear nodes, "
          f"{report['calib_images']} calibration images, {report['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
