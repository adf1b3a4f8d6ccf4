#!/usr/bin/env python
"""Fuzz the readers of user files with hypothesis and record counts, exceptions, hangs and time (issue 10).

  python benchmarks/fuzz.py --examples 10000 [--build-examples 1000] [--targets cfg yaml yaml-build spec labels coco]
                            [--out runs/fuzz.json]

yaml = the whole-structure validator; yaml-build = validator + the real build (slower, so fewer examples).

Every target may only raise the project's own error types (ValueError subclasses) or FileNotFoundError. Any other
exception is counted as a failure and its first occurrences are printed; an example slower than --hang-s seconds
counts as a hang. Exit status 1 when anything failed or hung.
"""
from __future__ import annotations

import argparse
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from hypothesis import HealthCheck, given, settings  # noqa: E402

import fuzz_targets as F  # noqa: E402


def fuzz_one(name: str, strategy, target, n: int, hang_s: float, workdir: str, seed: int) -> dict:
    warm = {"cfg": F.TINY_CFG, "yaml": F.TINY_YAML, "yaml-build": F.TINY_YAML,
            "spec": {"family": "ultralytics", "base": F.TINY_YAML}, "labels": b"0 0.5 0.5 0.1 0.1\n",
            "coco": {"images": []}}[name]
    try:  # imports and first-call caches are paid here, not by the first timed example
        target(warm, workdir) if name in ("labels", "coco") else target(warm)
    except F.ALLOWED:
        pass
    stats = {"target": name, "examples": 0, "accepted": 0, "own_errors": 0, "other_exceptions": 0, "hangs": 0,
             "max_example_s": 0.0, "first_failures": []}

    def record(inp):
        t0 = time.perf_counter()
        try:
            target(inp, workdir) if name in ("labels", "coco") else target(inp)
            stats["accepted"] += 1
        except F.ALLOWED:
            stats["own_errors"] += 1
        except Exception as e:  # noqa: BLE001  (what we are looking for)
            stats["other_exceptions"] += 1
            if len(stats["first_failures"]) < 5:
                stats["first_failures"].append({"input": repr(inp)[:400], "error": f"{type(e).__name__}: {e}"[:400],
                                                "where": traceback.format_exc().splitlines()[-3:]})
        took = time.perf_counter() - t0
        stats["examples"] += 1
        stats["max_example_s"] = max(stats["max_example_s"], took)
        if took > hang_s:
            stats["hangs"] += 1

    run = settings(max_examples=n, deadline=None, database=None, derandomize=False,
                   suppress_health_check=list(HealthCheck))(given(strategy)(record))
    from hypothesis import seed as hseed
    t0 = time.perf_counter()
    hseed(seed)(run)()
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    stats["max_example_s"] = round(stats["max_example_s"], 3)
    return stats


TARGETS = {"cfg": (F.cfg_strategy, F.cfg_target), "yaml": (F.yaml_strategy, F.yaml_check_target),
           "yaml-build": (F.yaml_strategy, F.yaml_target),
           "spec": (F.specs, F.spec_target), "labels": (F.label_files, F.label_target),
           "coco": (F.coco_dicts, F.coco_target)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=10000, help="generated inputs per target")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--build-examples", type=int, default=1000,
                    help="inputs for yaml-build (validator + real ultralytics/yolov5 build, ~0.1-0.3 s each)")
    ap.add_argument("--hang-s", type=float, default=5.0, help="an example slower than this counts as a hang")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the figures as json here")
    a = ap.parse_args(argv)
    old = F.set_fuzz_env()
    workdir = F.workdir()
    import hypothesis
    import torch
    results = []
    try:
        for name in a.targets:
            strategy, target = TARGETS[name]
            n = a.build_examples if name == "yaml-build" else a.examples
            r = fuzz_one(name, strategy(), target, n, a.hang_s, workdir, a.seed)
            results.append(r)
            print(f"{name:10s} {r['examples']:6d} examples  accepted {r['accepted']:6d}  own errors "
                  f"{r['own_errors']:6d}  other exceptions {r['other_exceptions']}  hangs {r['hangs']}  "
                  f"max {r['max_example_s']:.3f} s/example  {r['seconds']:.0f} s", flush=True)
            for f in r["first_failures"]:
                print(f"   FAIL {f['error']}\n        input {f['input']}\n        at {f['where']}")
    finally:
        F.restore_env(old)
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {"python": platform.python_version(), "torch": torch.__version__, "hypothesis": hypothesis.__version__,
            "machine": platform.processor() or platform.machine(), "limits": F.FUZZ_ENV, "seed": a.seed}
    if a.out:
        from yolo_prune.io import atomic_write_json
        atomic_write_json(Path(a.out), {"meta": meta, "results": results})
    bad = sum(r["other_exceptions"] + r["hangs"] for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
