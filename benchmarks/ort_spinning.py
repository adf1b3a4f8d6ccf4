#!/usr/bin/env python
"""Do onnxruntime's spinning intra-op workers slow sessions that are timed in turn? (docs/BENCHMARKS.md)

    python benchmarks/ort_spinning.py A.onnx B.onnx [--imgsz 320] [--runs 50] [--threads 1 2]

For each thread count, times the models alone and interleaved (as ``interleaved_times`` does), with the workers
spinning (onnxruntime's default) and not (``allow_spinning=0``, what our timing sessions use), and prints medians.
"""
import argparse
import time

import numpy as np
import onnxruntime as ort


def runner(path, threads: int, spinning: bool, imgsz: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)}
    return lambda: session.run(None, feed)


def medians_ms(runners: list, runs: int) -> list[float]:
    for run in runners:
        for _ in range(5):
            run()
    times = [[] for _ in runners]
    for i in range(runs):
        for k in range(len(runners)):
            j = (i + k) % len(runners)
            t = time.perf_counter()
            runners[j]()
            times[j].append(time.perf_counter() - t)
    return [float(np.median(t)) * 1e3 for t in times]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", nargs="+")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = p.parse_args()
    print("| threads | workers | timed | " + " | ".join(a.onnx) + " |")
    print("|---|---|---|" + "---|" * len(a.onnx))
    for threads in a.threads:
        for spinning in (True, False):
            alone = [medians_ms([runner(f, threads, spinning, a.imgsz)], a.runs)[0] for f in a.onnx]
            together = medians_ms([runner(f, threads, spinning, a.imgsz) for f in a.onnx], a.runs)
            for how, ms in (("alone", alone), ("interleaved", together)):
                print(f"| {threads} | {'spinning' if spinning else 'not spinning'} | {how} | "
                      + " | ".join(f"{m:.2f} ms" for m in ms) + " |")


if __name__ == "__main__":
    main()
