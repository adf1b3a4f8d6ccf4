#!/usr/bin/env python
"""Experiment (not an option): tools/prune.py with another per-layer allocation of the global ranking.

    python benchmarks/allocation_experiment.py --beta 1 -- PRUNE_FLAGS...          # importance / MACs**beta
    python benchmarks/allocation_experiment.py --taylor-absolute -- PRUNE_FLAGS... # taylor not group-relative

--beta B is now the product's `--macs-exponent B` (each group's scores divided by (its per-channel MACs / their
mean) ** B before the one global ranking; B = 1: importance per MAC; B < 0 protects the layers whose channels cost
most). This script used the geometric mean, which scales every score alike and so gives the same ranking.
--taylor-absolute ranks taylor by its raw value (a loss change) instead of relative to its group's mean.
docs/BENCHMARKS.md ("what else might close the last points") has the results: neither beat the default.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune.prune import importance  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beta", type=float)
    p.add_argument("--taylor-absolute", action="store_true")
    p.add_argument("prune_flags", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if a.taylor_absolute:
        importance.Taylor.relative = False
    from yolo_prune.commands.prune import main as prune_main
    flags = [f for f in a.prune_flags if f != "--"]
    prune_main(flags + ([] if a.beta is None else ["--macs-exponent", str(a.beta)]))


if __name__ == "__main__":
    main()
