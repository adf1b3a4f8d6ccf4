#!/usr/bin/env python
"""`python tools/finetune.py` from a checkout runs the `yolo_prune.commands.finetune` tool (its flags: --help).

The code lives in yolo_prune/commands/finetune.py, so the checkout and an installed `yolo-prune` run the same file.
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("yolo_prune.commands.finetune", run_name="__main__", alter_sys=True)
else:  # imported (tests, notebooks): the tool's entry function
    from yolo_prune.commands.finetune import main  # noqa: F401
