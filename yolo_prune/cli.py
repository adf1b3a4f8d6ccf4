"""``yolo-prune CMD [flags]``: the console entry point; runs the same code as ``python tools/<tool>.py [flags]``.

Each command is a tool module of ``yolo_prune.commands`` (the code the repository's ``tools/*.py`` launch), run as
``__main__`` with the remaining arguments, so flags, output and exit codes are exactly the tool's. The offline settings
(``yolo_prune.offline.apply``) are applied first.
"""
from __future__ import annotations

import difflib
import runpy
import sys

COMMANDS = {
    "prune": ("prune", "prune a model (structured channels or unstructured weights)"),
    "sparse-train": ("sparse_train", "sparsity training (L1 on BN gamma, or targeted)"),
    "finetune": ("finetune", "fine-tune a pruned model (--engine ours|ultralytics)"),
    "eval": ("eval_coco", "COCO mAP with pycocotools (.pt, .cfg, .onnx ...)"),
    "export": ("export_onnx", "ONNX export, verified against PyTorch (--layout ours|ultralytics|yolov5)"),
    "benchmark": ("benchmark", "latency/throughput of models and ONNX files"),
    "pipeline": ("pipeline", "the whole chain, resumable, with a report"),
    "predict": ("predict", "draw detections on images"),
    "yolo2coco": ("yolo2coco", "YOLO labels -> COCO json"),
    "voc2yolo": ("voc2yolo", "Pascal VOC folder -> YOLO dataset + data.yaml + COCO json"),
    "quantize": ("quantize", "INT8 (QDQ) static quantization of an exported ONNX model"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return f"usage: yolo-prune COMMAND [flags]   (yolo-prune COMMAND --help for its flags)\n\ncommands:\n{rows}"


def main(argv=None) -> int:
    from . import offline

    offline.apply()  # before any command imports ultralytics
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__
        print(f"yolo_prune {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        near = difflib.get_close_matches(name, list(COMMANDS), n=2)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        print(f"yolo-prune: unknown command {name!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = [f"yolo-prune {name}", *rest]
    try:
        runpy.run_module(f"yolo_prune.commands.{COMMANDS[name][0]}", run_name="__main__", alter_sys=False)
    except SystemExit as e:  # the tool's own exit code / error message
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        print(e.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
