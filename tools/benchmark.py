#!/usr/bin/env python
"""`python tools/benchmark.py` from a checkout runs the `yolo_prune.commands.benchmark` tool (its flags: --help).

The code lives in yolo_prune/commands/benchmark.py, so the checkout and an installed `yolo-prune` run the same file.
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("yolo_prune.commands.benchmark", run_name="__main__", alter_sys=True)
else:  # imported (tests, notebooks): the tool's entry function
    from yolo_prune.commands.benchmark import main  # noqa: F401
