#!/usr/bin/env python
"""INT8 static quantization (onnxruntime QDQ) of an exported fp32 detector, calibrated on real images.

    python tools/quantize.py --weights model.onnx --calib DATA_OR_DIR [--calib-images 64] [--per-channel]
        [--format qdq] [--keep-fp32 auto|N|none|unit,unit] [--sensitivity-images 8] --out model.int8.onnx

--calib: a data yaml (its train images), an image folder, a .txt list or one image; images are letterboxed as
the evaluator does. --keep-fp32 auto measures each unit's effect on the output (and its int8 latency) and keeps
the ones that hurt in fp32. Writes model.int8.onnx and model.int8.onnx.json (the fp32 sidecar plus a
'quantization' section); check it with tools/eval_coco.py and tools/benchmark.py.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="fp32 .onnx exported by tools/export_onnx.py")
    ap.add_argument("--calib", required=True, help="data yaml, image folder, .txt list or image")
    ap.add_argument("--calib-images", type=int, default=64, help="images used to calibrate (evenly spread)")
    ap.add_argument("--per-channel", action="store_true", help="per-output-channel weight scales")
    ap.add_argument("--format", default="qdq", choices=["qdq"], help="ONNX quantization format")
    ap.add_argument("--keep-fp32", default="auto",
                    help="auto (measured), N (the N most sensitive units), none, or unit names 'decode,model.0'")
    ap.add_argument("--sensitivity-images", type=int, default=8, help="calibration images scoring sensitivity")
    ap.add_argument("--calibrate-method", default="minmax", choices=["minmax", "percentile", "entropy"])
    ap.add_argument("--reduce-range", action="store_true", help="7-bit weights (CPUs without VNNI may saturate)")
    ap.add_argument("--no-latency-check", action="store_true",
                    help="do not keep fp32 the units whose int8 kernels measure slower than fp32")
    ap.add_argument("--imgsz", type=int, default=None, help="input size, only for a dynamic-shape export")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads for calibration and scoring")
    ap.add_argument("--out", required=True, help="output .onnx (its .json sidecar is written beside it)")
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
