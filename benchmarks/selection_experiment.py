#!/usr/bin/env python
"""Experiment (not an option): with reconstruct and one fixed allocation, does WHICH channels of a group go matter,
and does weighting the refit's calibration positions toward objects help?

    python benchmarks/selection_experiment.py --within l2 obs random taylor --targets 0.9:0.1 0.8:0.05
    python benchmarks/selection_experiment.py --within l2 --positions uniform foreground --targets 0.9:0.1 0.8:0.05
    python benchmarks/selection_experiment.py --consumer-error

``--within C``: every group keeps the multiset of its ``l2`` scores, so the global ranking (and the MACs exponent)
removes the same number of channels from every group as ``l2`` does, but the channels removed inside a group are
the ones criterion C ranks lowest: ``obs`` (the greedy OBS order of ``recon``: least consumer error after a
least-squares refit), ``random``, ``taylor`` (first-order Taylor on the unpruned model's own detections, no labels).
``--positions foreground``: the refit's sampled positions are drawn with probability proportional to 0.05 + the
teacher's detection confidence painted over its boxes (max over boxes, average-pooled to each layer's grid),
instead of uniformly. TARGET:E pairs give the MACs target and the fixed macs_exponent (the search's choices on
yolov5n). Scored on coco128 val2017 at 320 with pycocotools; the gap is the student-teacher gap on the first 64
calibration images. docs/BENCHMARKS.md (issue 12, "which channels inside a group") has the results.
"""
import argparse
import copy
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from yolo_prune.eval.coco import evaluate  # noqa: E402
from yolo_prune.eval.infer import non_max_suppression  # noqa: E402
from yolo_prune.layers import kept_modes  # noqa: E402
from yolo_prune.models import load  # noqa: E402
from yolo_prune.prune import importance, prune_model  # noqa: E402
from yolo_prune.prune import reconstruct as recon_module  # noqa: E402
from yolo_prune.prune.reconstruct import calibration_batch  # noqa: E402
from yolo_prune.train.taylor import pseudo_label_grad_fn  # noqa: E402
from yolo_prune.train.unlabeled import student_teacher_gap  # noqa: E402
from yolo_prune.versions import versions  # noqa: E402


def _with_l2_allocation(order_scores, group, modules) -> np.ndarray:
    """``l2``'s scores of ``group`` handed out in the order of ``order_scores`` (lowest l2 to the lowest there)."""
    l2 = importance.group_scores(group, modules, "l2")
    out = np.empty_like(l2)
    out[np.argsort(order_scores, kind="stable")] = np.sort(l2)
    return out


@importance.register_criterion
class WithinObs(importance.Recon):
    name = "within:obs"

    def scores(self, group, modules, rng, stats):
        return _with_l2_allocation(importance.recon_scores(group, modules, stats), group, modules)


@importance.register_criterion
class WithinRandom(importance.Criterion):
    name = "within:random"
    draw = 0  # which random order: main() sets it per --random-draws

    def scores(self, group, modules, rng, stats):
        order = np.random.default_rng((self.draw, group.gid)).random(group.width)
        return _with_l2_allocation(order, group, modules)


@importance.register_criterion
class WithinTaylor(importance.Taylor):
    name = "within:taylor"

    def scores(self, group, modules, rng, stats):
        return _with_l2_allocation(super().scores(group, modules, rng, stats), group, modules)


def consumer_errors(model, images: torch.Tensor, share: float = 0.25, seed: int = 0) -> dict:
    """Mean over groups of the consumers' relative output error after the optimal least-squares refit, when each
    group loses ``share`` of its channels chosen by obs / l2 / random (block OBS on the calibration statistics:
    removing set S costs Σ_taps tr(W_S (H_SS)^-1 W_Sᵀ) / output energy, H = (C + λI)^-1, as ``recon_scores``)."""
    from yolo_prune.graph import trace
    from yolo_prune.prune.reconstruct import input_statistics
    graph = trace(model, example=torch.rand(1, 3, 64, 64))
    stats = input_statistics(model, graph, images)
    modules = dict(model.named_modules())
    rng = np.random.default_rng(seed)

    def cost(group, removed) -> float:
        total = 0.0
        for name in {s.module for ch in group.channels for s in ch if s.role in ("in", "lin_in") and s.module in stats}:
            cov = stats[name][0]
            w = modules[name].weight.detach().double().numpy()
            w = w.reshape(w.shape[0], w.shape[1], -1).transpose(2, 0, 1)  # (taps, out, in)
            h = np.linalg.inv(cov + 1e-3 * np.trace(cov) / len(cov) * np.eye(len(cov)))
            idx = sorted({s.index for k in removed for s in group.channels[k] if s.module == name
                          and s.role in ("in", "lin_in")})
            if idx:
                ws, hinv = w[:, :, idx], np.linalg.inv(h[np.ix_(idx, idx)])
                total += float(np.einsum("toi,ij,toj->", ws, hinv, ws)) / float(((w @ cov) * w).sum())
        return total
    per = {"obs": [], "l2": [], "random": []}
    for group in graph.groups:
        k = int(group.width * share)
        if k < 2:
            continue
        orders = {"obs": importance.recon_scores(group, modules, stats),
                  "l2": importance.group_scores(group, modules, "l2"), "random": rng.random(group.width)}
        for key, order in orders.items():
            per[key].append(cost(group, np.argsort(order, kind="stable")[:k]))
    return {key: round(float(np.mean(v)), 4) for key, v in per.items()}


def foreground_map(model, images: torch.Tensor, conf: float = 0.05) -> torch.Tensor:
    """(N, H, W): the max confidence of the model's own detections covering each pixel (0 elsewhere)."""
    with kept_modes(model), torch.no_grad():
        model.eval()
        pred = model(images)
        pred = pred[0] if isinstance(pred, (list, tuple)) else pred
        dets = non_max_suppression(pred, conf=conf, iou=0.45)
    n, _, h, w = images.shape
    sal = torch.zeros(n, h, w)
    for i, d in enumerate(dets):
        for x1, y1, x2, y2, c, _ in d.tolist():
            ys, xs = slice(max(0, int(y1)), min(h, math.ceil(y2))), slice(max(0, int(x1)), min(w, math.ceil(x2)))
            sal[i, ys, xs] = sal[i, ys, xs].clamp(min=c)
    return sal


def foreground_sampler(sal: torch.Tensor, floor: float = 0.05):
    """A drop-in for ``reconstruct._sample_positions`` that draws positions ∝ floor + pooled foreground map (the
    calibration images are square, so a layer's grid is recovered from the position count)."""
    uniform = recon_module._sample_positions
    n = len(sal)

    def sample(n_total: int, budget: int, gen: torch.Generator) -> torch.Tensor:
        if n_total <= budget or n_total % n:
            return uniform(n_total, budget, gen)
        hw = n_total // n
        h = int(round(math.sqrt(hw)))
        weight = F.adaptive_avg_pool2d(sal[:, None], (h, hw // h))[:, 0].reshape(-1) + floor
        return torch.multinomial(weight, budget, replacement=False, generator=gen).sort().values
    return sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="../shared/weights/yolov5n.pt")
    p.add_argument("--coco", default="../shared/coco128")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--targets", nargs="+", default=["0.9:0.1", "0.8:0.05"], metavar="TARGET:E")
    p.add_argument("--within", nargs="+", default=["l2", "obs", "random", "taylor"])
    p.add_argument("--positions", nargs="+", default=["uniform"], choices=["uniform", "foreground"])
    p.add_argument("--random-draws", type=int, default=1, help="how many random orders the 'random' row tries")
    p.add_argument("--consumer-error", action="store_true",
                   help="only print the consumers' mean relative refit error at 25 %% per group, per order")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    coco = Path(a.coco)
    ev = dict(images=coco / "images" / "val2017", ann=coco / "annotations" / "instances_val2017.json",
              imgsz=a.imgsz, batch=16, verbose=False, threads=a.threads)
    base = load(a.weights)
    calib = calibration_batch(coco / "data.yaml", 128, a.imgsz)
    if a.consumer_error:
        print({"consumer_error_at_25%": consumer_errors(base, calib)})
        return
    samplers = {"uniform": recon_module._sample_positions}
    if "foreground" in a.positions:
        samplers["foreground"] = foreground_sampler(foreground_map(base, calib))
    print(versions(), flush=True)
    for target, exponent in (t.split(":") for t in a.targets):
        for positions in a.positions:
            recon_module._sample_positions = samplers[positions]
            rows = [(w, d) for w in a.within for d in (range(a.random_draws) if w == "random" else [0])]
            for within, draw in rows:
                WithinRandom.draw = draw
                crit = "l2" if within == "l2" else f"within:{within}"
                det, t0 = copy.deepcopy(base), time.time()
                rep = prune_model(det, target_macs=float(target), criterion=crit, compensate="reconstruct",
                                  round_to=8, imgsz=a.imgsz, verify=False, calib=calib, progress=False,
                                  macs_exponent=float(exponent), calib_gap=student_teacher_gap,
                                  grad_fn=pseudo_label_grad_fn(calib) if within == "taylor" else None)
                r = evaluate(det, **ev)
                name = within + (f" #{draw}" if within == "random" else "")
                print({"target": float(target), "E": float(exponent), "within": name, "positions": positions,
                       "macs": round(rep["macs_ratio"], 4), "mAP50-95": round(r["mAP50-95"], 4),
                       "mAP50": round(r["mAP50"], 4), "gap": round(student_teacher_gap(det, base, calib[:64]), 4),
                       "s": round(time.time() - t0)}, flush=True)


if __name__ == "__main__":
    main()
