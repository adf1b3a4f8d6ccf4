"""The allow-list unpickler executes nothing from a hostile .pt, and damaged files give clear errors."""
import io
import os
import pickle
import random
import zipfile

import pytest
import torch

import yolo_prune  # noqa: F401
from yolo_prune.models import load
from yolo_prune.models.safe_pickle import (CorruptCheckpoint, RefusedGlobal, allow_list_load, is_allowed,
                                           pickle_globals, safe_torch_load)
from yolo_prune.models.ultralytics import ultralytics_policy
from yolo_prune.models.yolov5_legacy import yolov5_policy


class _WritesMarker:
    """Unpickling this calls os.system (a classic pickle exploit)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_zip(tmp_path, marker):
    p = tmp_path / "evil.pt"
    torch.save({"model": _WritesMarker(marker), "w": torch.zeros(2)}, p)
    return p


def _evil_legacy(tmp_path, marker):
    p = tmp_path / "evil_legacy.pt"
    torch.save({"model": _WritesMarker(marker)}, p, _use_new_zipfile_serialization=False)
    return p


def _evil_protocol4(tmp_path, marker):
    """A zip checkpoint whose data.pkl uses STACK_GLOBAL (protocol 4) instead of GLOBAL."""
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    p = tmp_path / "evil4.pt"
    with zipfile.ZipFile(p, "w") as z:
        for n in src.namelist():
            data = src.read(n)
            if n.endswith("data.pkl"):
                data = pickle.dumps({"model": _WritesMarker(marker)}, protocol=4)
            z.writestr(n, data)
    return p


@pytest.mark.parametrize("make", [_evil_zip, _evil_legacy, _evil_protocol4])
@pytest.mark.parametrize("policy", [yolov5_policy, ultralytics_policy])
def test_malicious_pickle_is_refused_and_executes_nothing(tmp_path, make, policy):
    marker = tmp_path / "pwned"
    p = make(tmp_path, marker)
    assert "posix.system" in pickle_globals(p)  # listed from opcodes, without running it
    assert not marker.exists()
    with pytest.raises(RefusedGlobal, match=r"refused global 'posix\.system'"):
        allow_list_load(p, policy)
    assert not marker.exists()


def test_models_load_refuses_malicious_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    p = _evil_zip(tmp_path, marker)
    with pytest.raises(RefusedGlobal, match="posix.system"):
        load(p)
    with pytest.raises(RefusedGlobal, match="posix.system"):
        safe_torch_load(p)
    assert not marker.exists()


def test_yolov5_policy_refuses_unknown_class_in_models_namespace(tmp_path):
    # a class that is not one of the yolov5 building blocks, even under models.*, is refused by name
    assert yolov5_policy("models.common", "C3") is not None
    assert yolov5_policy("models.common", "os") is None
    assert yolov5_policy("builtins", "eval") is None
    assert yolov5_policy("builtins", "getattr") is None
    assert ultralytics_policy("builtins", "eval") is None
    assert ultralytics_policy("ultralytics.utils", "downloads") is None
    assert is_allowed("__builtin__.set", yolov5_policy) and not is_allowed("posix.system", ultralytics_policy)


def test_pickle_globals_of_plain_checkpoint(tmp_path):
    p = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(3), "n": torch.nn.Conv2d(1, 1, 1)}, p)
    found = pickle_globals(p)
    assert "torch._utils._rebuild_tensor_v2" in found
    assert "torch.nn.modules.conv.Conv2d" in found


@pytest.fixture
def good_pt(tmp_path):
    p = tmp_path / "good.pt"
    torch.save({"w": torch.randn(64, 64), "names": {0: "a"}}, p)
    return p


def test_truncated_checkpoint_gives_clear_error(tmp_path, good_pt):
    data = good_pt.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpoint, match=r"truncated\.pt.*expected a torch\.save\(\) checkpoint"):
        safe_torch_load(bad)
    with pytest.raises(CorruptCheckpoint, match="truncated.pt"):
        load(bad)


def test_damaged_member_and_garbage_and_empty(tmp_path, good_pt):
    data = bytearray(good_pt.read_bytes())
    i = data.find(b"archive/data/0") + 200  # flip bytes inside the tensor payload: zip CRC catches it
    data[i:i + 16] = bytes(16)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="damaged"):
        safe_torch_load(damaged)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(random.Random(0).randbytes(4096))  # fixed seed: deterministic
    with pytest.raises(CorruptCheckpoint, match="garbage.pt"):
        safe_torch_load(garbage)
    with pytest.raises(CorruptCheckpoint, match="garbage.pt"):
        allow_list_load(garbage, yolov5_policy)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CorruptCheckpoint, match="empty"):
        pickle_globals(empty)


def test_missing_file_says_what_to_supply(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt.*supply"):
        safe_torch_load(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt.*(Supply|supply)"):
        load(tmp_path / "missing.pt")


def test_safe_torch_load_reads_good_file(good_pt):
    ck = safe_torch_load(good_pt)
    assert ck["w"].shape == (64, 64) and ck["names"] == {0: "a"}


class _CallsClass:
    """Unpickling this would *call* an allowed class (its constructor) instead of restoring an instance."""

    def __init__(self, cls, args):
        self.cls, self.args = cls, args

    def __reduce__(self):
        return self.cls, self.args


def test_allowed_classes_are_never_called(tmp_path, monkeypatch):
    import sys
    import types

    # legacy yolov5: a file that calls models.common.Conv(...) rather than restoring a pickled Conv
    fake = types.ModuleType("models.common")

    class Conv:
        pass

    Conv.__module__, Conv.__qualname__ = "models.common", "Conv"
    fake.Conv = Conv
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.common", fake)
    p = tmp_path / "calls_conv.pt"
    torch.save({"model": _CallsClass(Conv, (3, 16))}, p)
    monkeypatch.delitem(sys.modules, "models.common")
    with pytest.raises(RefusedGlobal, match=r"refused call of '.*Conv'"):
        allow_list_load(p, yolov5_policy)

    # ultralytics: constructing DetectionModel from a path would read (or download) a yaml; must be refused
    from ultralytics.nn.tasks import DetectionModel
    p2 = tmp_path / "calls_model.pt"
    torch.save({"ema": _CallsClass(DetectionModel, (str(tmp_path / "evil.yaml"),))}, p2)
    with pytest.raises(RefusedGlobal, match=r"refused call of 'ultralytics\.nn\.tasks\.DetectionModel'"):
        allow_list_load(p2, ultralytics_policy)

    # torch's _rebuild_from_type_v2 would call its first argument: it must not reach a class either
    p3 = tmp_path / "rebuild_trick.pt"
    torch.save({"x": _CallsClass(torch._tensor._rebuild_from_type_v2,
                                 (DetectionModel, torch.Tensor, (str(tmp_path / "evil.yaml"),), {}))}, p3)
    with pytest.raises(RefusedGlobal, match="_rebuild_from_type_v2"):
        allow_list_load(p3, ultralytics_policy)
