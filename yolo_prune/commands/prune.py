#!/usr/bin/env python
"""Prune a detector: physically remove channels, compensate their constant output, write P.pt + P.json.

  python tools/prune.py --weights yolov5n.pt --ratio 0.5 --out runs/prune/yolov5n-p50.pt
"""
import sys
from pathlib import Path

from yolo_prune.flags import prune_parser
from yolo_prune.prune.options import Calibration, LatencySetup, PassOptions
from yolo_prune.prune.run import prune_file, summary_table
from yolo_prune.prune.spec import TARGETS, PruneSpec, default_macs_exponent
from yolo_prune.train.taylor import grad_fn_for
from yolo_prune.train.unlabeled import student_teacher_gap


def main(argv=None):
    p = prune_parser(__doc__)
    a = p.parse_args(argv)
    if a.mode == "structured" and a.ratio is None and a.threshold is None and a.target_macs is None \
            and a.target_latency is None:
        p.error("give one of --ratio, --threshold, --target-macs or --target-latency")
    # taylor: the family's loss on a few labelled --data batches, else on --calib images against pseudo-labels
    grad_fn = grad_fn_for(a.criterion, a.data, a.calib, a.calib_images, a.calib_imgsz, a.imgsz)
    compensate = "off" if a.no_compensate else a.compensate
    target = next((k for k in TARGETS if getattr(a, k) is not None), "ratio")
    exponent = default_macs_exponent(target, compensate) if a.macs_exponent is None else a.macs_exponent
    spec = None if a.mode == "unstructured" else PruneSpec(
        ratio=a.ratio, threshold=a.threshold, target_macs=a.target_macs, target_latency=a.target_latency,
        criterion=a.criterion, round_to=a.round_to, min_keep=a.min_keep, ignore=a.ignore, local=a.local,
        compensate=compensate, macs_exponent=exponent)
    report = prune_file(
        a.weights, a.out, spec, mode=a.mode, amount=a.amount, config=a.config, show_groups=a.show_groups,
        device=a.device, grad_fn=grad_fn,
        calibration=Calibration(source=a.calib, count=a.calib_images, imgsz=a.calib_imgsz, gap=student_teacher_gap),
        latency=LatencySetup(backend=a.backend, threads=a.threads, cache=a.latency_cache),
        run=PassOptions(imgsz=a.imgsz, seed=a.seed))
    print(summary_table(report))
    if "reconstruction" in report:
        r = report["reconstruction"]
        print(f"reconstruction: {r['refit_layers']} layers refit on {r['images']} images, mean relative error "
              f"{r['rel_err_before_mean']:.3f} -> {r['rel_err_after_mean']:.3f}"
              + (f", kept β compensation: {', '.join(r['fallback_layers'])}" if r["fallback_layers"] else ""))
    if "macs_exponent" in report:
        m = report["macs_exponent"]
        print(f"macs exponent {m['chosen']:g} chosen by the output gap on {m['gap_images']} calibration images: "
              + ", ".join(f"{t['macs_exponent']:g}: " + (f"{t['gap']:.4f}" if "gap" in t else "unreachable")
                          for t in m["trials"]))
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
