"""``--set KEY=VALUE ...``: the one parser every tool uses (values read as yaml: 0, 0.5, true, [1, 2], null)."""
from __future__ import annotations

import yaml


def parse_set(items) -> dict:
    """{key: yaml value} of ``KEY=VALUE`` strings; a ValueError naming the item that has no ``=``."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out
