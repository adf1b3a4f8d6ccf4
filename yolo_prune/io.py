"""Atomic writes: a temp file (or folder) in the target folder, then a rename, so no reader sees half of it."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def _usual_permissions(path: str | os.PathLike) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # mkstemp makes 0600


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp file beside ``path`` to fill; on a clean exit it is renamed over ``path``, on any error removed.

    For writers that must read their own output back before it is published (the ONNX export checks and runs
    it first). The folder is created if missing; the file gets the usual permissions (0666 minus the umask).
    ``suffix``: the temp file's ending, for writers that pick the format from it (``.tmp.onnx``, ``.tmp.png``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _usual_permissions(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` to fill a temp file beside ``path``, then rename it over ``path`` (``atomic_path``)."""
    with atomic_path(path, suffix) as tmp:
        write(str(tmp))
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """A fresh temp folder beside ``path`` to fill; on a clean exit it takes ``path``'s place, on error removed.

    ``replace``: an earlier folder at ``path`` is removed first. False: a folder that appeared at ``path``
    meanwhile (another process finished the same work) is kept and ours dropped. Readers never see a half-built
    folder; between removing the old one and the rename, ``path`` is briefly absent.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists() and not replace:
            return
        if path.exists():
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if replace or not path.exists():
                raise  # not the race with an identical result: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
