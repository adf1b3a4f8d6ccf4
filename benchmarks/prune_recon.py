#!/usr/bin/env python
"""mAP after pruning WITHOUT training, with a few unlabeled images: β compensation vs least-squares reconstruction.

  python benchmarks/prune_recon.py --weights ../shared/weights/yolov5n.pt --coco ../shared/coco128 \
      --targets 0.9 0.8 0.7 0.5 --out runs/bench/prune_recon

Calibration images: coco128 train2017 (no labels read); score: coco128 val2017 with pycocotools.
Each row is ``--rows`` entry COMPENSATE:CRITERION. Writes OUT/prune_recon.md and OUT/prune_recon.json.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from yolo_prune.eval.coco import evaluate  # noqa: E402
from yolo_prune.flags import parse_macs_exponent  # noqa: E402
from yolo_prune.models import load  # noqa: E402
from yolo_prune.prune import prune_model  # noqa: E402
from yolo_prune.prune.reconstruct import calibration_batch  # noqa: E402
from yolo_prune.train.taylor import pseudo_label_grad_fn, taylor_grad_fn  # noqa: E402
from yolo_prune.train.unlabeled import student_teacher_gap  # noqa: E402
from yolo_prune.versions import versions  # noqa: E402


def _distilled(det, base, calib, a, weight, rep, row, tm, prune_s, ev) -> dict:
    """A copy of the pruned model distilled label-free (head outputs + ``weight`` × features), scored."""
    from yolo_prune.train.unlabeled import distill_unlabeled
    student = copy.deepcopy(det)
    res = distill_unlabeled(student, copy.deepcopy(base), calib, epochs=a.distill_epochs, batch=16, lr=a.distill_lr,
                            max_minutes=a.distill_minutes, progress=False, features=weight,
                            removed=rep["plan"]["layers"])
    r = evaluate(student, **ev)
    out = {"row": row + "+distill" + (f"+features{weight:g}" if weight else ""), "target_macs": tm,
           "macs_ratio": rep["macs_ratio"], "mAP50-95": r["mAP50-95"], "mAP50": r["mAP50"], "prune_s": prune_s,
           "distill_s": res["seconds"], "distill_epochs": res["epochs"],
           "gap": [round(h["gap"], 5) for h in res["history"]]}
    print(out, flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="../shared/weights/yolov5n.pt")
    p.add_argument("--coco", default="../shared/coco128")
    p.add_argument("--data", help="a YOLO data yaml instead of --coco: calibration on its train split, scored on "
                                  "its val split (labels converted on the fly)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.5])
    p.add_argument("--rows", nargs="+", default=["bias:l2", "bias:taylor", "reconstruct:l2", "reconstruct:recon"])
    p.add_argument("--calib-images", type=int, default=128)
    p.add_argument("--calib-positions", type=int, default=16384)
    p.add_argument("--alpha", type=float, default=1e-3)
    p.add_argument("--round-to", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-unpruned", action="store_true", help="skip scoring the unpruned model")
    p.add_argument("--distill", nargs="*", default=["0.8:reconstruct:recon"], metavar="TARGET:COMP:CRIT",
                   help="rows to follow with label-free distillation on the calibration images")
    p.add_argument("--distill-epochs", type=int, default=30)
    p.add_argument("--distill-minutes", type=float, default=8.0)
    p.add_argument("--distill-lr", type=float, default=2e-4)
    p.add_argument("--distill-features", type=float, nargs="+", default=[0.0],
                   help="feature-distillation weights to run per distilled row (0: head outputs only)")
    p.add_argument("--ignore", nargs="*", default=[], help="layer globs left out of every cut (prune.py --ignore)")
    p.add_argument("--macs-exponent", type=parse_macs_exponent, default=0.0,
                   help="rank by importance / (MACs a channel saves)^E, or search (prune.py --macs-exponent)")
    p.add_argument("--out", default="runs/bench/prune_recon")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    coco = Path(a.coco)
    data = Path(a.data) if a.data else coco / "data.yaml"
    truth = dict(data=data) if a.data else dict(images=coco / "images" / "val2017",
                                                 ann=coco / "annotations" / "instances_val2017.json")
    ev = dict(**truth, imgsz=a.imgsz, batch=16, verbose=False, threads=a.threads)
    base = load(a.weights)
    t0 = time.time()
    t = time.time()
    calib = calibration_batch(data, a.calib_images, a.imgsz)
    calib_load_s = time.time() - t
    rows = []
    if not a.no_unpruned:
        rows.append({"row": "unpruned", "target_macs": 1.0, "macs_ratio": 1.0,
                     "mAP50-95": evaluate(base, **ev)["mAP50-95"]})
        print(rows[-1], flush=True)
    # taylor: label-free, against the unpruned model's own detections on the calibration images (the issue's
    # setting); taylor@labels: coco128 train labels, for reference only
    grad_fns = {"taylor": pseudo_label_grad_fn(calib), "taylor@labels": taylor_grad_fn(data, imgsz=a.imgsz)}
    for tm in a.targets:
        for row in a.rows:
            comp, crit = row.split(":")
            grad_fn = grad_fns.get(crit)
            crit = crit.split("@")[0]
            det = copy.deepcopy(base)
            t = time.time()
            rep = prune_model(det, target_macs=tm, criterion=crit, compensate=comp, round_to=a.round_to,
                              imgsz=a.imgsz, verify=False, grad_fn=grad_fn,
                              calib=calib, calib_positions=a.calib_positions, recon_alpha=a.alpha, progress=False,
                              ignore=a.ignore, macs_exponent=a.macs_exponent, calib_gap=student_teacher_gap)
            prune_s = time.time() - t
            r = evaluate(det, **ev)
            out = {"row": row, "target_macs": tm, "macs_ratio": rep["macs_ratio"], "mAP50-95": r["mAP50-95"],
                   "mAP50": r["mAP50"], "prune_s": prune_s, "seconds": rep["seconds"],
                   "macs_exponent": rep["spec"]["macs_exponent"]}
            if "macs_exponent" in rep:
                out["exponent_trials"] = rep["macs_exponent"]["trials"]
            if "reconstruction" in rep:
                rec = rep["reconstruction"]
                out.update(refit_layers=rec["refit_layers"], fallback=rec["fallback_layers"],
                           rel_err_before=rec["rel_err_before_mean"], rel_err_after=rec["rel_err_after_mean"])
            rows.append(out)
            print({k: v for k, v in out.items() if k != "seconds"}, flush=True)
            if any(abs(float(d.split(":", 1)[0]) - tm) < 1e-9 and d.split(":", 1)[1] == row for d in a.distill):
                rows += [_distilled(det, base, calib, a, w, rep, row, tm, prune_s, ev) for w in a.distill_features]
    lines = ["| target MACs | compensation:criterion | MACs ratio | mAP50-95 | prune s (calib+refit) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['target_macs']:.2f} | {r['row']} | {r['macs_ratio']:.3f} | {r['mAP50-95']:.4f} | "
              f"{r.get('prune_s', 0):.1f}" + (f" + distill {r['distill_s']:.0f}" if "distill_s" in r else "") + " |"
              for r in rows]
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prune_recon.md").write_text(text + "\n")
    (out / "prune_recon.json").write_text(json.dumps({"rows": rows, "args": vars(a), "versions": versions(),
                                                      "calib_load_s": calib_load_s,
                                                      "seconds": time.time() - t0}, indent=1, default=str))


if __name__ == "__main__":
    main()
