#!/usr/bin/env python
"""Latency benchmark of models x backends x batch sizes, with MACs, params, ONNX size and optionally mAP.

    python tools/benchmark.py --weights a.pt b.pt c.onnx --imgsz 640 [--batch 1 8] [--runs 100] [--warmup 10]
        [--backends torch ort-cpu ort-cuda ort-trt] [--threads N] [--eval --data D.yaml | --images DIR --ann J]
        --out DIR
Writes DIR/bench.md (also printed), DIR/bench.json, DIR/latency_vs_macs.png and, with --eval, map_vs_latency.png.
"""
import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script from a checkout (python tools/x.py): use that checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", required=True, help=".pt / .yaml / .cfg / .onnx files")
    ap.add_argument("--imgsz", type=int, nargs="+", default=[640], help="input size: one value or H W")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--backends", nargs="+", default=["torch", "ort-cpu"],
                    help="torch, torch-cpu, torch-cuda, ort-cpu, ort-cuda, ort-trt")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for torch and onnxruntime")
    ap.add_argument("--no-trt-fp16", action="store_true", help="run ort-trt in fp32 (default fp16)")
    ap.add_argument("--trt-int8", action="store_true",
                    help="run ort-trt in INT8: each model is quantized (symmetric QDQ) on --calib images first")
    ap.add_argument("--calib", default=None, help="--trt-int8: data yaml / image folder for calibration")
    ap.add_argument("--calib-images", type=int, default=32, help="--trt-int8: calibration images")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--op-profile", action="store_true",
                    help="also profile each ort-cpu model per ONNX op type (DIR/ops.md): where latency lags MACs")
    ap.add_argument("--eval", action="store_true", help="also measure mAP of each model")
    ap.add_argument("--data", default=None, help="--eval: data yaml")
    ap.add_argument("--images", default=None, help="--eval: image folder (with --ann)")
    ap.add_argument("--ann", default=None, help="--eval: COCO annotation json (with --images)")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)

    eval_kwargs = None
    if args.eval:
        if args.data:
            eval_kwargs = {"data": args.data}
        elif args.images and args.ann:
            eval_kwargs = {"images": args.images, "ann": args.ann}
        else:
            ap.error("--eval needs --data D.yaml or --images DIR --ann J")
        eval_kwargs["imgsz"] = args.imgsz[0]

    from yolo_prune.export.benchmark import run_benchmark

    imgsz = args.imgsz[0] if len(args.imgsz) == 1 else tuple(args.imgsz[:2])
    try:
        run_benchmark(args.weights, imgsz=imgsz, batches=tuple(args.batch), runs=args.runs, warmup=args.warmup,
                      backends=tuple(args.backends), threads=args.threads, out=args.out, eval_kwargs=eval_kwargs,
                      trt_fp16=not args.no_trt_fp16, opset=args.opset, op_profile=args.op_profile,
                      trt_int8=args.trt_int8, calib=args.calib, calib_images=args.calib_images)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}/bench.md, bench.json and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
