#!/usr/bin/env python
"""Export a detector to ONNX (decoding in the graph), verify it with onnxruntime and write <out>.json beside it.

    python tools/export_onnx.py --weights W --imgsz 640 [--batch 1] [--dynamic] [--opset 17] [--half]
                                [--simplify] [--nms] [--layout ours|ultralytics|yolov5]
                                --out model.onnx

Graph input 'images' (batch, 3, H, W) float 0..1 RGB. Output 'output0' in --layout (default: the family's own):
ours (batch, boxes, 4 + nc): cx, cy, w, h in input pixels, then class scores 0..1 (objectness multiplied in), i.e.
the Detector's eval output; ultralytics (batch, 4 + nc, boxes), as `yolo export` writes; yolov5 (batch, boxes,
5 + nc) with objectness apart, as the yolov5 repo's export.py writes. The layout is recorded in the metadata and
the sidecar, and tools/eval_coco.py reads every layout. With --nms
also 'detections' (K, 7): batch_index, x1, y1, x2, y2, class, score after per-class NMS. The file is written
only if onnxruntime reproduces PyTorch (|d| <= 1e-3 + 1e-5 |ref|); names, strides and the export settings go
into the ONNX metadata and into <out>.json.
"""
import sys

from yolo_prune.flags import export_onnx_parser


def main(argv=None) -> int:
    ap = export_onnx_parser(__doc__)
    args = ap.parse_args(argv)

    from yolo_prune.export import ExportError, ProviderUnavailableError, export_onnx

    imgsz = args.imgsz[0] if len(args.imgsz) == 1 else tuple(args.imgsz[:2])
    try:
        report = export_onnx(args.weights, args.out, imgsz=imgsz, batch=args.batch, dynamic=args.dynamic,
                             opset=args.opset, half=args.half, simplify=args.simplify, nms=args.nms,
                             device=args.device, nms_conf=args.conf, nms_iou=args.iou, max_det=args.max_det,
                             providers=args.verify_providers, weights=args.darknet_weights, layout=args.layout)
    except (ExportError, ProviderUnavailableError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    outs = ", ".join(f"{o['name']} {o['shape']}" for o in report["outputs"])
    print(f"wrote {args.out} ({report['file_bytes'] / 1e6:.1f} MB, opset {report['opset']}, "
          f"{report['gflops']:.2f} GFLOPs, {report['params'] / 1e6:.2f} M params) and {args.out}.json")
    print(f"outputs: {outs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
