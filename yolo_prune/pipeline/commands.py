"""The standalone command that reproduces a stage, written with the tool's own parser (``flags.PARSERS``): each
value is given by its argparse ``dest`` and spelled the way the tool spells the flag, so a flag the tool renames
or drops fails here (and in tests/test_pipeline.py) instead of in the command a user copies from report.md."""
from __future__ import annotations

import json
import shlex

from ..flags import PARSERS

_ACTIONS: dict = {}  # tool -> {dest: argparse action}, built once per tool


def shell(args) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def _actions(tool: str) -> dict:
    if tool not in _ACTIONS:
        _ACTIONS[tool] = {a.dest: a for a in PARSERS[tool]()._actions if a.option_strings}
    return _ACTIONS[tool]


def tool_argv(tool: str, values: dict) -> list:
    """``python tools/<tool>.py`` and ``values`` {dest: value}, in their order. None, False and [] are left out
    (the tool's default applies), True sets a switch, a list fills a multi-value flag."""
    actions = _actions(tool)
    argv = ["python", f"tools/{tool}.py"]
    for dest, value in values.items():
        action = actions.get(dest)
        if action is None:
            raise KeyError(f"tools/{tool}.py has no flag for {dest!r} (its flags: "
                           f"{', '.join(sorted(a.option_strings[0] for a in actions.values()))})")
        if value is None or value is False or (isinstance(value, (list, tuple)) and not value):
            continue
        flag = action.option_strings[0]
        if action.nargs == 0:  # a switch (store_true)
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            if action.nargs not in ("+", "*"):
                raise ValueError(f"tools/{tool}.py {flag} takes one value, the pipeline has {list(value)}")
            argv += [flag, *value]
        else:
            argv += [flag, value]
    return argv


def tool_command(tool: str, values: dict) -> str:
    return shell(tool_argv(tool, values))


def train_command(tool: str, weights, data, out, overrides: dict, flags: dict | None = None) -> str:
    """tools/sparse_train.py or tools/finetune.py with the stage's training overrides: the common ones as flags,
    every other key through ``--set KEY=VALUE``; ``flags``: more of the tool's own flags (e.g. teacher)."""
    direct = ("epochs", "imgsz", "batch", "device") + (("sr",) if tool == "sparse_train" else ())
    values = {"weights": weights, "data": data, **{k: overrides[k] for k in direct if k != "sr"}}
    if tool == "sparse_train":
        values["sr"] = overrides.get("sr", 0.0)
    values["set"] = [f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in overrides.items()
                     if k not in direct]
    values.update(flags or {})
    values["out"] = out
    return tool_command(tool, values)
