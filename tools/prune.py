#!/usr/bin/env python
"""Prune a detector: physically remove channels, compensate their constant output, write P.pt + P.json.

  python tools/prune.py --weights yolov5n.pt --ratio 0.5 --out runs/prune/yolov5n-p50.pt
"""
import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script from a checkout (python tools/x.py): use that checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.prune.compensate import MODES  # noqa: E402
from yolo_prune.prune.importance import criterion_names  # noqa: E402
from yolo_prune.prune.latency import LATENCY_BACKENDS  # noqa: E402
from yolo_prune.prune.run import prune_checkpoint, summary_table  # noqa: E402
from yolo_prune.train.taylor import taylor_grad_fn  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--data", help="data yaml (needed by --criterion taylor)")
    p.add_argument("--show-groups", action="store_true", help="print every channel group and its couplings")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output checkpoint P.pt (P.json is written beside it)")
    a = p.parse_args(argv)
    if a.mode == "structured" and a.ratio is None and a.threshold is None and a.target_macs is None \
            and a.target_latency is None:
        p.error("give one of --ratio, --threshold, --target-macs or --target-latency")
    grad_fn = None
    if a.criterion == "taylor" and a.data is not None:  # gradients from a few real batches, with the family's loss
        grad_fn = taylor_grad_fn(a.data, imgsz=min(a.imgsz, 320))
    report = prune_checkpoint(
        a.weights, a.out, ratio=a.ratio, criterion=a.criterion, local=a.local, threshold=a.threshold,
        target_macs=a.target_macs, round_to=a.round_to, min_keep=a.min_keep, ignore=a.ignore, config=a.config,
        imgsz=a.imgsz, compensate="off" if a.no_compensate else a.compensate, mode=a.mode, amount=a.amount,
        show_groups=a.show_groups, data=a.data, device=a.device, seed=a.seed, calib=a.calib,
        calib_images=a.calib_images, calib_imgsz=a.calib_imgsz, target_latency=a.target_latency,
        backend=a.backend, threads=a.threads, latency_cache=a.latency_cache, grad_fn=grad_fn)
    print(summary_table(report))
    if "reconstruction" in report:
        r = report["reconstruction"]
        print(f"reconstruction: {r['refit_layers']} layers refit on {r['images']} images, mean relative error "
              f"{r['rel_err_before_mean']:.3f} -> {r['rel_err_after_mean']:.3f}"
              + (f", kept β compensation: {', '.join(r['fallback_layers'])}" if r["fallback_layers"] else ""))
    if report.get("latency"):
        lat = report["latency"]
        for c in lat["candidates"]:
            print(f"round_to {c['round_to']}: " + (c["error"] if "error" in c else
                  f"predicted latency {c['predicted_ratio']:.3f}x, MACs {c['macs_ratio']:.3f}x, "
                  f"importance removed {c['removed_importance']:.1%}"))
        print(f"chose round_to {lat['round_to']}: predicted latency {lat['predicted_ratio']:.3f}x on {lat['backend']}"
              f" ({lat['threads']} thread(s), {lat['measured_probes']} of {lat['probes']} probes measured)")
    if a.mode == "unstructured":
        print(f"global sparsity {report['global_sparsity']:.3f} (dense layers, no speed-up expected)")
    for note in report.get("notes", []):
        print(f"note: {note}")
    print(f"wrote {a.out} and {Path(a.out).with_suffix('.json')}"
          + "".join(f", {x}" for x in [report.get("ultralytics_pt"), report.get("yolov5")] + list(report.get("darknet") or []) if x))
    return report


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
