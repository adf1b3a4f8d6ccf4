"""The package's default settings (package data, read with importlib.resources; one place for each).

* ``train.yaml``: training hyperparameters (``yolo_prune.train.config``; ``--cfg`` / ``--set`` override them)
* ``pipeline.yaml``: the end-to-end pipeline's settings (``yolo_prune.pipeline``; ``--config`` overrides them)
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

NAMES = ("train.yaml", "pipeline.yaml")


def path(name: str) -> Path:
    """Where the installed default file is (shown in messages; a plain file in every normal installation)."""
    if name not in NAMES:
        raise ValueError(f"unknown defaults file {name!r} (expected one of {', '.join(NAMES)})")
    return Path(str(resources.files(__name__).joinpath(name)))


def read_text(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown defaults file {name!r} (expected one of {', '.join(NAMES)})")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def load(name: str, what: str, file=None) -> dict:
    """The default settings ``name`` (or the file standing in for it) as a dict; ``what`` names them in the error."""
    p = Path(file) if file is not None else path(name)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} missing (yolo_prune/defaults/{name} ships with yolo_prune; "
                                "reinstall the package)")
    return yaml.safe_load(p.read_text()) or {}
