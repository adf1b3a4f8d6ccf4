"""matplotlib without a display (Agg), PNGs written atomically: what the benchmark and report figures share."""
from __future__ import annotations

from pathlib import Path

from .io import atomic_write
# matplotlib is imported inside the functions that use it (heavy, not needed to import yolo_prune)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def write_figure(fig, path) -> Path:
    """Save ``fig`` as a PNG at ``path`` (atomically) and close it, also when saving fails; returns the path."""
    try:
        save_png(fig, Path(path))
    finally:
        pyplot().close(fig)
    return Path(path)
