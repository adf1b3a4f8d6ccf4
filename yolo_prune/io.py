"""Atomic file writes: a temp file in the target folder, then a rename, so no reader sees half a file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` to fill a temp file beside ``path``, then rename it over ``path``.

    The folder is created if missing; on any error the temp file is removed and ``path`` is untouched. The file
    gets the usual permissions (0666 minus the umask), not mkstemp's 0600. ``suffix``: the temp file's ending, for
    writers that pick the format from it (e.g. ``.tmp.png`` for cv2).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_chunks(path, chunks) -> Path:
    """Write an iterable of bytes (e.g. tensors one by one, without joining them in memory)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
    return atomic_write(path, write)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path, obj, indent: int | None = 1) -> Path:
    """``obj`` as json (path first, like every writer here; ``indent=None``: one line, for large files)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")
