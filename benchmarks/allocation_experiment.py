#!/usr/bin/env python
"""Experiment (not an option): tools/prune.py with another per-layer allocation of the global ranking.

    python benchmarks/allocation_experiment.py --beta 1 -- PRUNE_FLAGS...          # importance / MACs**beta
    python benchmarks/allocation_experiment.py --taylor-absolute -- PRUNE_FLAGS... # taylor not group-relative

--beta B multiplies each group's scores by (its per-channel MACs / their geometric mean over the groups) ** -B
before the one global ranking (B = 1: importance per MAC; B < 0 protects the layers whose channels cost most).
--taylor-absolute ranks taylor by its raw value (a loss change) instead of relative to its group's mean.
docs/BENCHMARKS.md ("what else might close the last points") has the results: neither beat the default.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.prune import importance, plan  # noqa: E402


def per_mac(beta: float) -> None:
    original = plan._Selection.__init__

    def init(self, graph, spec, seed, stats):
        original(self, graph, spec, seed, stats)
        macs = plan.MacsModel(graph, self.modules)
        base = macs.macs()
        cost = np.array([max(base - macs.macs({g.gid: 1}), 1) for g in graph.groups], dtype=float)
        rel = cost / np.exp(np.log(cost).mean())
        self.scores = [s / rel[i] ** beta for i, s in enumerate(self.scores)]
        self.ranks = self._global_ranks()

    plan._Selection.__init__ = init


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beta", type=float)
    p.add_argument("--taylor-absolute", action="store_true")
    p.add_argument("prune_flags", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if a.beta is not None:
        per_mac(a.beta)
    if a.taylor_absolute:
        importance.Taylor.relative = False
    from yolo_prune.commands.prune import main as prune_main
    prune_main([f for f in a.prune_flags if f != "--"])


if __name__ == "__main__":
    main()
