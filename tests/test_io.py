"""yolo_prune.io: every write is whole or absent (temp file / folder beside the target, then a rename)."""
import os
import stat

import pytest

from yolo_prune.io import atomic_dir, atomic_path, atomic_write_json, atomic_write_text


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_path_publishes_only_on_a_clean_exit(tmp_path):
    target = tmp_path / "sub" / "model.onnx"
    with atomic_path(target, ".tmp.onnx") as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".tmp.onnx") and not target.exists()
        tmp.write_bytes(b"first")
        assert tmp.read_bytes() == b"first"  # the writer can read its own output back before publishing
    assert target.read_bytes() == b"first"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600

    with pytest.raises(RuntimeError, match="verification failed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("verification failed")
    assert target.read_bytes() == b"first" and _leftovers(target.parent) == []


def test_atomic_writers_replace_whole_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_json(tmp_path / "a.json", {"k": [1, 2]})
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two" and '"k"' in (tmp_path / "a.json").read_text()
    assert _leftovers(tmp_path) == []


def test_atomic_dir_swaps_a_finished_folder_in(tmp_path):
    out = tmp_path / "data"
    (out / "old").mkdir(parents=True)
    with atomic_dir(out) as tmp:
        (tmp / "data.yaml").write_text("nc: 1\n")
        assert not (out / "data.yaml").exists()  # readers still see the old folder
    assert sorted(p.name for p in out.iterdir()) == ["data.yaml"] and _leftovers(tmp_path) == []

    with pytest.raises(OSError, match="disk full"):
        with atomic_dir(out) as tmp:
            (tmp / "half").write_text("x")
            raise OSError("disk full")
    assert sorted(p.name for p in out.iterdir()) == ["data.yaml"] and _leftovers(tmp_path) == []


def test_atomic_dir_without_replace_keeps_what_another_process_finished(tmp_path):
    out = tmp_path / "conv"
    with atomic_dir(out, replace=False) as tmp:
        (tmp / "mine").write_text("x")
        out.mkdir()  # another process (a DDP rank) finished the same conversion meanwhile
        (out / "theirs").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["theirs"] and _leftovers(tmp_path) == []
