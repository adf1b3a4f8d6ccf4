#!/usr/bin/env python
"""Torch-Pruning against yolo_prune at equal MACs, no training (issue 12's comparison).

  pip install --no-deps --target runs/tp_site torch-pruning==1.6.1     # the benchmark's own site, no dependency
  python benchmarks/torch_pruning_compare.py --tp-site runs/tp_site --weights ../shared/weights/yolov5n.pt \
      --coco ../shared/coco128 --targets 0.9 0.8 0.7 0.5 --out runs/bench/tp_compare

Each Torch-Pruning row is a ``MetaPruner`` with one of its importances (global ranking unless ``local``), the
head's output convs ignored, ``round_to`` as ours; its pruning ratio is bisected until the model's MACs (our
profiler, at --imgsz) are at or just below the target, so both tools are compared at the same MACs. Torch-Pruning
has no compensation: what it removes is gone until fine-tuning. Our rows go through ``prune_model``. Taylor rows
(both tools) take gradients of the family loss on --grad-data labels (4 batches of 8, no augmentation).
Score: pycocotools mAP50-95 on --val (a data yaml) or on coco128 val2017. Writes OUT/tp_compare.md and .json.
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
from yolo_prune.eval.profile import profile  # noqa: E402
from yolo_prune.models import load  # noqa: E402
from yolo_prune.prune import prune_model  # noqa: E402
from yolo_prune.prune.reconstruct import calibration_batch  # noqa: E402
from yolo_prune.train.taylor import taylor_grad_fn  # noqa: E402
from yolo_prune.train.unlabeled import student_teacher_gap  # noqa: E402
from yolo_prune.versions import versions  # noqa: E402

TP_ROWS = {  # row name -> (importance factory, global ranking)
    "tp:l2-local": (lambda tp: tp.importance.GroupMagnitudeImportance(p=2), False),
    "tp:l2": (lambda tp: tp.importance.GroupMagnitudeImportance(p=2), True),
    "tp:bn": (lambda tp: tp.importance.BNScaleImportance(), True),
    "tp:lamp": (lambda tp: tp.importance.LAMPImportance(p=2), True),
    "tp:taylor": (lambda tp: tp.importance.GroupTaylorImportance(), True),
}


def tp_prune(tp, base, row, ratio, imgsz, round_to):
    """A copy of ``base`` pruned by Torch-Pruning at ``ratio``; returns (model, MACs). A Taylor row's ``base``
    carries its gradients, which the copy gets too (``deepcopy`` drops ``.grad``)."""
    det = copy.deepcopy(base).eval()
    for p, q in zip(base.parameters(), det.parameters()):
        q.grad = None if p.grad is None else p.grad.clone()
    make_imp, global_pruning = TP_ROWS[row]
    modules = dict(det.named_modules())
    ignored = [modules[n] for n in det.head_modules() if n in modules]
    example = torch.zeros(1, 3, imgsz, imgsz)
    pruner = tp.pruner.MetaPruner(det, example, importance=make_imp(tp), global_pruning=global_pruning,
                                  pruning_ratio=ratio, ignored_layers=ignored, round_to=round_to)
    pruner.step()
    det.zero_grad(set_to_none=True)
    return det.eval(), profile(det, imgsz)["macs"]


def tp_at_target(tp, base, row, target, imgsz, round_to, grad_fn, base_macs, steps=10):
    """Bisect the pruning ratio: the least-pruned Torch-Pruning model whose MACs are <= target x base."""
    if row == "tp:taylor":  # gradients once, on a copy every bisection step starts from
        base = copy.deepcopy(base)
        grad_fn(base)
    lo, hi, best = 0.0, 0.95, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        det, macs = tp_prune(tp, base, row, mid, imgsz, round_to)
        if macs <= target * base_macs:
            hi, best = mid, (det, macs, mid)
        else:
            lo = mid
    if best is None:
        raise RuntimeError(f"{row}: MACs {target} not reached at pruning ratio {hi}")
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tp-site", required=True, help="folder torch-pruning was installed into (pip --target)")
    p.add_argument("--weights", default="../shared/weights/yolov5n.pt")
    p.add_argument("--coco", default="../shared/coco128", help="calibration / gradients: its data.yaml; "
                   "score: its val2017 unless --val")
    p.add_argument("--val", help="data yaml or VOC root to score on instead of coco128 val2017")
    p.add_argument("--grad-data", help="labelled data for Taylor gradients (default: --coco's data.yaml)")
    p.add_argument("--calib", help="calibration images for reconstruct (default: --coco's data.yaml)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.5])
    p.add_argument("--rows", nargs="+", default=["tp:l2-local", "tp:l2", "tp:taylor", "ours:bias:l2",
                                                 "ours:reconstruct:l2", "ours:reconstruct:taylor"],
                   help=f"tp:IMPORTANCE ({', '.join(k[3:] for k in TP_ROWS)}) or ours:COMPENSATE:CRITERION")
    p.add_argument("--round-to", type=int, default=8)
    p.add_argument("--macs-exponent", type=parse_macs_exponent, default=0.0,
                   help="our rows: rank by importance / (MACs a channel saves)^E, or search (prune.py --macs-exponent)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/bench/tp_compare")
    a = p.parse_args()
    sys.path.insert(0, str(Path(a.tp_site).resolve()))
    import torch_pruning as tp
    torch.set_num_threads(a.threads)
    coco = Path(a.coco)
    if a.val:
        ev = dict(data=a.val, imgsz=a.imgsz, batch=16, verbose=False, threads=a.threads)
    else:
        ev = dict(images=coco / "images" / "val2017", ann=coco / "annotations" / "instances_val2017.json",
                  imgsz=a.imgsz, batch=16, verbose=False, threads=a.threads)
    base = load(a.weights).eval()
    base_macs = profile(base, a.imgsz)["macs"]
    grad_fn = taylor_grad_fn(a.grad_data or coco / "data.yaml", imgsz=a.imgsz)
    calib = calibration_batch(a.calib or coco / "data.yaml", 128, a.imgsz)
    r0 = evaluate(base, **ev)
    rows = [{"row": "unpruned", "target_macs": 1.0, "macs_ratio": 1.0, "mAP50-95": r0["mAP50-95"], "mAP50": r0["mAP50"],
             "params": sum(q.numel() for q in base.parameters()), "prune_s": 0.0}]
    print(rows[-1], flush=True)
    t0 = time.time()
    for tm in a.targets:
        for row in a.rows:
            t = time.time()
            if row.startswith("tp:"):
                try:
                    det, macs, ratio = tp_at_target(tp, base, row, tm, a.imgsz, a.round_to, grad_fn, base_macs)
                except Exception as e:  # noqa: BLE001 -- its failure on a model (a broken cut, a crash) is a result
                    error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    rows.append({"row": row, "target_macs": tm, "error": error})
                    print(rows[-1], flush=True)
                    continue
                extra = {"tp_pruning_ratio": round(ratio, 4)}
            else:
                _, comp, crit = row.split(":")
                det = copy.deepcopy(base)
                rep = prune_model(det, target_macs=tm, criterion=crit, compensate=comp, round_to=a.round_to,
                                  imgsz=a.imgsz, verify=False, grad_fn=grad_fn if crit == "taylor" else None,
                                  calib=calib if comp == "reconstruct" or a.macs_exponent == "search" else None,
                                  progress=False, macs_exponent=a.macs_exponent, calib_gap=student_teacher_gap)
                macs, extra = profile(det, a.imgsz)["macs"], {"macs_exponent": rep["spec"]["macs_exponent"]}
            prune_s = time.time() - t
            r = evaluate(det, **ev)
            rows.append({"row": row, "target_macs": tm, "macs_ratio": macs / base_macs, "mAP50-95": r["mAP50-95"],
                         "mAP50": r["mAP50"], "params": sum(q.numel() for q in det.parameters()),
                         "prune_s": prune_s, **extra})
            print(rows[-1], flush=True)
    lines = ["| target MACs | row | MACs ratio | params | mAP50-95 | mAP50 | prune s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target_macs']:.2f} | {r['row']} | failed: {r['error']} | | | | |" if "error" in r else
              f"| {r['target_macs']:.2f} | {r['row']} | {r['macs_ratio']:.3f} | {r.get('params', 0) / 1e6:.3f} M | "
              f"{r['mAP50-95']:.4f} | {r.get('mAP50', float('nan')):.4f} | {r.get('prune_s', 0):.0f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tp_compare.md").write_text(text + "\n")
    (out / "tp_compare.json").write_text(json.dumps({"rows": rows, "args": vars(a), "versions": versions(),
                                                     "torch_pruning": tp.__version__, "seconds": time.time() - t0},
                                                    indent=1, default=str))


if __name__ == "__main__":
    main()
