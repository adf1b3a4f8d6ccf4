"""The flags of the standalone tools the pipeline reproduces, one parser builder per tool.

``yolo_prune/commands/<tool>.py`` (run by ``tools/<tool>.py``) parses its argv with ``PARSERS[tool]`` and the
pipeline writes each stage's reproduce-command with the same parser (``pipeline/commands.py``), so a flag renamed
or removed here breaks the pipeline's test instead of the command a user copies from report.md. The builders
live below both (not in ``commands/``, which imports the pipeline) and import their choice lists when called,
so importing this module costs nothing.
"""
from __future__ import annotations

import argparse


def _parser(description: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_macs_exponent(text: str) -> float | str:
    if text == "search":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'search', found {text!r}") from None


def prune_parser(description: str | None = None) -> argparse.ArgumentParser:
    from .prune.compensate import MODES
    from .prune.importance import criterion_names
    from .prune.latency import LATENCY_BACKENDS

    p = _parser(description)
    p.add_argument("--weights", "--model", required=True, help="model file: .pt, .yaml, .cfg or .weights")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--ratio", type=float, help="fraction of prunable channels to remove (global by default)")
    sel.add_argument("--threshold", type=float, help="remove channels whose score (|gamma| for bn) is below T")
    sel.add_argument("--target-macs", type=float, help="remove channels until MACs <= F x the original")
    sel.add_argument("--target-latency", type=float,
                     help="remove channels until the latency measured on --backend is <= F x the unpruned model's")
    p.add_argument("--backend", default="ort-cpu", choices=LATENCY_BACKENDS,
                   help="--target-latency: runtime the latency is measured on (at --imgsz, batch 1)")
    p.add_argument("--threads", type=int, default=1, help="--target-latency: intra-op threads while measuring")
    p.add_argument("--latency-cache", help="--target-latency: folder of cached measurements "
                                           "(default ~/.cache/yolo_prune/latency)")
    p.add_argument("--criterion", default="bn", choices=criterion_names(),
                   help="channel score; recon: greedy OBS, how well the rest stand in after a refit (needs --calib)")
    p.add_argument("--macs-exponent", type=parse_macs_exponent, default=None, metavar="E|search",
                   help="--target-macs/--target-latency: rank channels by importance / (MACs each saves)^E; search "
                        "prunes once per candidate E and keeps the cut whose outputs on the --calib images stay "
                        "nearest the original's (5 prunes instead of 1). Default: search with --compensate "
                        "reconstruct, else 0")
    p.add_argument("--local", action="store_true", help="apply --ratio per group instead of globally")
    p.add_argument("--round-to", type=int, default=None,
                   help="kept widths are multiples of N (default 8; with --target-latency the planner measures "
                        "the runtime's candidates, e.g. 8 and 16 on CPUs, and keeps the best)")
    p.add_argument("--min-keep", type=float, default=0.1, help="keep at least this fraction of every group")
    p.add_argument("--ignore", nargs="*", default=[], help="layer names or globs never to prune")
    p.add_argument("--config", help="prune.yaml: {layers: {glob: ratio | exclude}}")
    p.add_argument("--imgsz", type=int, default=640, help="image size for the MACs/params report")
    p.add_argument("--compensate", default="bias", choices=[m for m in MODES if m != "off"],
                   help="fold removed channels' constant into the next layer's bias/BN mean (bias), or also "
                        "correct zero-padded borders with a CompensatedConv2d (exact), or refit every consumer "
                        "by least squares on unlabeled --calib images (reconstruct)")
    p.add_argument("--calib", help="unlabeled calibration images: data yaml (train split) or image folder/list")
    p.add_argument("--calib-images", type=int, default=128, help="number of calibration images (default 128)")
    p.add_argument("--calib-imgsz", type=int, default=320, help="calibration image size (default 320)")
    p.add_argument("--no-compensate", action="store_true", help="drop removed channels without compensation")
    p.add_argument("--mode", default="structured", choices=["structured", "unstructured"])
    p.add_argument("--amount", type=float, help="unstructured mode: fraction of weights to zero")
    p.add_argument("--data", help="data yaml: labelled batches for --criterion taylor (without it, taylor uses "
                                  "pseudo-labels on --calib images)")
    p.add_argument("--show-groups", action="store_true", help="print every channel group and its couplings")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output checkpoint P.pt (P.json is written beside it)")
    return p


def sparse_train_parser(description: str | None = None) -> argparse.ArgumentParser:
    from .train.cli import add_common_args

    p = _parser(description)
    add_common_args(p)
    p.add_argument("--sr", type=float, help="L1 strength on BN γ (0 = plain training)")
    p.add_argument("--sr-schedule", choices=["constant", "linear", "cosine"])
    p.add_argument("--sr-warmup", type=int, help="epochs of linear sr ramp-up")
    p.add_argument("--sparsity", choices=["l1", "targeted"],
                   help="targeted: drive the γ of the channels a --target-macs cut removes to exactly 0")
    p.add_argument("--target-macs", type=float, help="MACs fraction you will prune to (with --sparsity targeted)")
    p.add_argument("--round-to", type=int, help="channel multiple of the later cut (tools/prune.py --round-to)")
    p.add_argument("--teacher", help="distil from this model while training (e.g. the --weights file itself)")
    return p


def finetune_parser(description: str | None = None) -> argparse.ArgumentParser:
    from .train.cli import add_common_args

    p = _parser(description)
    add_common_args(p)
    p.add_argument("--teacher", help="unpruned model for output distillation")
    p.add_argument("--distill-weight", type=float, help="weight of the distillation loss (default 1.0)")
    p.add_argument("--distill-features", type=float,
                   help="weight of feature distillation: every BN output matched to the teacher's kept channels, "
                        "paired by the plan prune.py stores in the checkpoint (default 0: off)")
    p.add_argument("--unlabeled", help="label-free distillation from --teacher on these images (folder, list, or "
                                       "a data yaml's train split); no label is read")
    p.add_argument("--unlabeled-images", type=int, default=128, help="--unlabeled: number of images (default 128)")
    p.add_argument("--max-minutes", type=float, help="--unlabeled: stop after this many minutes")
    p.add_argument("--recalibrate-bn", action="store_true",
                   help="--unlabeled: re-estimate BN statistics on the images afterwards (default: keep them)")
    p.add_argument("--engine", choices=["ours", "ultralytics"], default="ours",
                   help="trainer: ours (default, every family) or ultralytics' own trainer with "
                        "yolo_prune.integrations.ultralytics.PrunedTrainer (ultralytics models; --set takes "
                        "ultralytics' argument names)")
    return p


def eval_coco_parser(description: str | None = None) -> argparse.ArgumentParser:
    ap = _parser(description)
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
    return ap


def export_onnx_parser(description: str | None = None) -> argparse.ArgumentParser:
    ap = _parser(description)
    ap.add_argument("--weights", required=True,
                    help=".pt (ultralytics, yolov5, yolo_prune), model .yaml or darknet .cfg")
    ap.add_argument("--darknet-weights", default=None, help="darknet .weights for a .cfg")
    ap.add_argument("--imgsz", type=int, nargs="+", default=[640], help="input size: one value or H W")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--half", action="store_true", help="fp16 (needs --device cuda)")
    ap.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim")
    ap.add_argument("--nms", action="store_true", help="add an end-to-end NMS output 'detections' (K, 7)")
    ap.add_argument("--conf", type=float, default=0.25, help="--nms score threshold")
    ap.add_argument("--iou", type=float, default=0.45, help="--nms IoU threshold")
    ap.add_argument("--max-det", type=int, default=100, help="--nms boxes kept per class and image")
    ap.add_argument("--layout", choices=["ours", "ultralytics", "yolov5"], default=None,
                    help="output0 layout: ours (B, N, 4+nc), ultralytics (B, 4+nc, N) or yolov5 (B, N, 5+nc, "
                         "objectness apart); default: the model family's own convention")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--verify-providers", nargs="+", default=None,
                    help="onnxruntime providers for the check (cpu, cuda, trt; default cpu, cuda with --half)")
    ap.add_argument("--out", required=True, help="output .onnx path (its folder is created)")
    return ap


def quantize_parser(description: str | None = None) -> argparse.ArgumentParser:
    ap = _parser(description)
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
    return ap


def benchmark_parser(description: str | None = None) -> argparse.ArgumentParser:
    ap = _parser(description)
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
    return ap


# tool name (tools/<name>.py) -> its parser builder
PARSERS = {"prune": prune_parser, "sparse_train": sparse_train_parser, "finetune": finetune_parser,
           "eval_coco": eval_coco_parser, "export_onnx": export_onnx_parser, "quantize": quantize_parser,
           "benchmark": benchmark_parser}
