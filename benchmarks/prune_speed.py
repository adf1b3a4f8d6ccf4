#!/usr/bin/env python
"""Graph + plan + surgery time of yolo_prune vs Torch-Pruning on yolov5n, in one process.

  python benchmarks/prune_speed.py --weights ../shared/weights/yolov5n.pt [--repeats 5]

Torch-Pruning is optional (pip install torch-pruning==1.6.1); it is timed on the same model object type (our
rebuilt yolov5n), building its DependencyGraph at 640 as its yolov5 example does and pruning 2% of channels with
MagnitudeImportance. yolo_prune traces at 64 px (channel structure does not depend on resolution).
"""
import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from yolo_prune.models import load  # noqa: E402
from yolo_prune.prune import prune_model  # noqa: E402
from yolo_prune.versions import versions  # noqa: E402


def time_ours(base, ratio):
    det = copy.deepcopy(base)
    t = time.perf_counter()
    rep = prune_model(det, ratio, imgsz=640, verify=False)
    total = time.perf_counter() - t
    return rep["seconds"], total


def time_tp(base, ratio):
    import torch_pruning as tp
    det = copy.deepcopy(base)
    example = torch.zeros(1, 3, 640, 640)
    ignored = [det.get_submodule(n) for n in det.head_modules()]
    t0 = time.perf_counter()
    imp = tp.importance.MagnitudeImportance(p=2)
    pruner = tp.pruner.MagnitudePruner(det, example, importance=imp, pruning_ratio=ratio, ignored_layers=ignored,
                                       global_pruning=True)
    t1 = time.perf_counter()
    pruner.step()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="../shared/weights/yolov5n.pt")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    base = load(a.weights)
    time_ours(base, a.ratio)  # warm-up: imports and first-call costs
    ours = [time_ours(base, a.ratio) for _ in range(a.repeats)]
    med = {k: statistics.median(o[0][k] for o in ours) for k in ("graph", "plan", "surgery")}
    print(f"yolo_prune  graph {med['graph']:.3f}s  plan {med['plan']:.3f}s  surgery {med['surgery']:.3f}s  "
          f"graph+plan+surgery {sum(med.values()):.3f}s  (whole prune_model incl. MACs profiling at 640: "
          f"{statistics.median(o[1] for o in ours):.3f}s)")
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        print("Torch-Pruning not installed: pip install torch-pruning==1.6.1 to compare")
        return
    time_tp(base, 0.02)
    tps = [time_tp(base, 0.02) for _ in range(a.repeats)]
    g, s = statistics.median(t[0] for t in tps), statistics.median(t[1] for t in tps)
    from importlib.metadata import version
    print(f"Torch-Pruning {version('torch-pruning')}  graph {g:.3f}s  prune {s:.3f}s  total {g + s:.3f}s")
    print(f"median of {a.repeats}; threads {a.threads}; versions {versions()}")


if __name__ == "__main__":
    main()
