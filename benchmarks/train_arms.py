#!/usr/bin/env python
"""Issue 4, acceptance 2/3: same epoch budget, (a) plain training vs (b) sparse -> prune 0.5x MACs -> fine-tune.

  python benchmarks/train_arms.py --e1 14 --e2 7 --out runs/bench/arms
  python benchmarks/train_arms.py --weights ../shared/weights/yolov5n.pt --data ../shared/coco128/data.yaml \
      --imgsz 320 --e1 2 --e2 2 --set optimizer=SGD lr0=0.01 momentum=0.937 batch=16 nbs=16 --out runs/bench/arms_v5n

yolov8n from its yaml (random init), the demo's synthetic set (384 train / 96 val, 3 classes, 160 px) and the
demo's recipe (AdamW lr0 0.002, batch 8, one step per batch, mosaic closed for the last 2 epochs). Arm (a) trains
E1 + E2 epochs with sr = 0; arm (b) sparse-trains E1 epochs (sr), prunes to --target-macs with round_to 16 and
fine-tunes E2 epochs. Both final models are scored on the full val set with pycocotools.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.data.synthetic import make_synthetic  # noqa: E402
from yolo_prune.eval.coco import evaluate  # noqa: E402
from yolo_prune.prune.run import prune_checkpoint  # noqa: E402
from yolo_prune.train.api import finetune, sparse_train  # noqa: E402
from yolo_prune.versions import versions  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--e1", type=int, default=14)
    p.add_argument("--e2", type=int, default=7)
    p.add_argument("--sr", type=float, default=1e-3)
    p.add_argument("--target-macs", type=float, default=0.5)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--weights", default="yolov8n.yaml", help="start point of both arms (yaml = from scratch)")
    p.add_argument("--data", help="data yaml (default: the demo's synthetic set)")
    p.add_argument("--set", nargs="*", default=[], help="recipe overrides KEY=VALUE (cfg/train.yaml keys)")
    p.add_argument("--sparsity", default="l1", choices=["l1", "targeted"],
                   help="targeted: arm (b) drives the γ of the channels the cut removes to 0 (cfg/train.yaml)")
    p.add_argument("--target-start", type=int, default=0, help="targeted: epoch at which fading starts")
    p.add_argument("--target-zero-at", type=float, default=0.7, help="targeted: fraction of E1 when γ reach 0")
    p.add_argument("--distill", action="store_true",
                   help="distil all training from the start weights when --weights is a .pt (both arms, both of (b)'s "
                        "stages); from scratch, only (b)'s fine-tune distils, from its sparse model")
    p.add_argument("--compensate", default="exact", choices=["bias", "exact", "off"])
    p.add_argument("--round-to", type=int, default=16)
    p.add_argument("--ft-set", nargs="*", default=[], help="overrides for (b)'s fine-tune only, KEY=VALUE")
    p.add_argument("--restart-lr", action="store_true",
                   help="(b)'s fine-tune restarts at lr0 (the old behaviour) instead of continuing (a)'s LR schedule")
    p.add_argument("--reuse-sparse", action="store_true", help="keep (b)'s sparse run if the folder has one")
    p.add_argument("--arms", default="ab", choices=["ab", "a", "b"], help="run only one arm (tuning)")
    p.add_argument("--out", default="runs/bench/arms")
    a = p.parse_args()
    out = Path(a.out)
    data = a.data or make_synthetic(out / "data", n_train=384, n_val=96, imgsz=a.imgsz, nc=3, seed=0)
    recipe = dict(imgsz=a.imgsz, batch=8, nbs=8, optimizer="AdamW", lr0=0.002, momentum=0.9, warmup_epochs=1.0,
                  close_mosaic=2, workers=2, val_max_images=48, seed=0)
    for kv in a.set:
        k, _, v = kv.partition("=")
        recipe[k] = yaml.safe_load(v)
    ev = dict(data=str(data), imgsz=a.imgsz, batch=16, verbose=False)
    rows, t0 = {}, time.time()
    if a.data:
        rows["start"] = evaluate(a.weights, **ev)

    start_teacher = a.weights if a.distill and Path(a.weights).suffix == ".pt" else None
    t = time.time()
    if "a" in a.arms:
        plain = sparse_train(a.weights, str(data), out_dir=out / "a_plain", teacher=start_teacher,
                             overrides={**recipe, "epochs": a.e1 + a.e2, "sr": 0.0})
        rows["a_plain"] = {**evaluate(plain["last"], **ev), "wall_s": time.time() - t}
    elif (out / "a_plain" / "last.pt").is_file():  # tuning (b): score the (a) of an earlier run in this folder
        rows["a_plain"] = {**evaluate(str(out / "a_plain" / "last.pt"), **ev), "reused": True}
    if "b" in a.arms:
        run_b(a, out, data, recipe, ev, rows, start_teacher)
    finish(a, out, rows, t0)


def split_schedule(recipe: dict, e1: int, e2: int) -> tuple[dict, dict]:
    """(a)'s linear LR schedule over e1 + e2 epochs, cut at e1: the sparse run decays only to where (a) is after
    e1 epochs and the fine-tune continues from there, so both arms see the same LR at every epoch."""
    from yolo_prune.train.config import resolve

    cfg = resolve(recipe)
    if cfg["cos_lr"]:
        raise SystemExit("--set cos_lr=true: the split schedule is worked out for linear decay only")
    lr0, lrf = float(cfg["lr0"]), float(cfg["lrf"])
    step = (1 - lrf) / (e1 + e2)  # LR factor lost per epoch in (a)
    lrf1 = 1 - e1 * step
    return {"lrf": lrf1}, {"lr0": lr0 * lrf1, "lrf": 1 - e2 * step / lrf1}


def run_b(a, out, data, recipe, ev, rows, start_teacher):
    sched_sparse, sched_ft = ({}, {}) if a.restart_lr else split_schedule(recipe, a.e1, a.e2)
    t = time.time()
    targeted = {} if a.sparsity == "l1" else {
        "sparsity": "targeted", "target_macs": a.target_macs, "target_round_to": a.round_to,
        "target_start": a.target_start, "target_zero_at": a.target_zero_at}
    if a.reuse_sparse and (out / "b_sparse" / "last.pt").is_file():  # tuning the fine-tune only
        from yolo_prune.models import load
        from yolo_prune.train.sparsity import gamma_shares, prunable_bns

        sparse = {"last": str(out / "b_sparse" / "last.pt"),
                  "gamma": gamma_shares(prunable_bns(load(out / "b_sparse" / "last.pt")))}
        rows["b_sparse"] = {**evaluate(sparse["last"], **ev), "gamma": sparse["gamma"], "reused": True}
    else:
        sparse = sparse_train(a.weights, str(data), out_dir=out / "b_sparse", teacher=start_teacher,
                              overrides={**recipe, "epochs": a.e1, "sr": a.sr, **targeted, **sched_sparse})
        rows["b_sparse"] = {**evaluate(sparse["last"], **ev), "wall_s": time.time() - t, "gamma": sparse["gamma"]}
    t = time.time()
    rep = prune_checkpoint(sparse["last"], out / "b_pruned.pt", target_macs=a.target_macs, round_to=a.round_to,
                           imgsz=a.imgsz, compensate=a.compensate)
    rows["b_pruned"] = {**evaluate(str(out / "b_pruned.pt"), **ev), "wall_s": time.time() - t,
                        "macs_ratio": rep["macs_ratio"]}
    t = time.time()
    ft = finetune(str(out / "b_pruned.pt"), str(data), out_dir=out / "b_finetune",
                  teacher=(start_teacher or sparse["last"]) if a.distill else None,
                  overrides={**recipe, "epochs": a.e2, "warmup_epochs": 0.0, **sched_ft,
                             **{k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in a.ft_set)}})
    rows["b_finetuned"] = {**evaluate(ft["last"], **ev), "wall_s": time.time() - t}


def finish(a, out, rows, t0):
    keep = ("mAP50-95", "mAP50", "wall_s", "macs_ratio", "gamma", "reused")
    table = {k: {kk: v[kk] for kk in keep if kk in v} for k, v in rows.items()}
    ratio = (table["b_finetuned"]["mAP50-95"] / max(table["a_plain"]["mAP50-95"], 1e-9)
             if {"a_plain", "b_finetuned"} <= set(table) else float("nan"))
    print(json.dumps(table, indent=1))
    print(f"(b) / (a) mAP50-95 = {ratio:.3f}  (aim >= 0.98); total {time.time() - t0:.0f} s")
    (out / "arms.json").write_text(json.dumps({"rows": table, "ratio": ratio, "args": vars(a),
                                               "versions": versions()}, indent=1, default=str))


if __name__ == "__main__":
    main()
