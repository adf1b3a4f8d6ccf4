#!/usr/bin/env python
"""Latency benchmark of models x backends x batch sizes, with MACs, params, ONNX size and optionally mAP.

    python tools/benchmark.py --weights a.pt b.pt c.onnx --imgsz 640 [--batch 1 8] [--runs 100] [--warmup 10]
        [--backends torch ort-cpu ort-cuda ort-trt] [--threads N] [--eval --data D.yaml | --images DIR --ann J]
        --out DIR
Writes DIR/bench.md (also printed), DIR/bench.json, DIR/latency_vs_macs.png and, with --eval, map_vs_latency.png.
"""
import sys

from yolo_prune.flags import benchmark_parser


def main(argv=None) -> int:
    ap = benchmark_parser(__doc__)
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
