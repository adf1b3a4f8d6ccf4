"""Hostile inputs: every crafted file is refused quickly with a one-line error naming it, nothing executes, nothing
touches the network. The crafting lives in tests/hostile.py; docs/SECURITY.md describes the policy under test.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hostile as H
from yolo_prune.models import load
from yolo_prune.models.checkpoint import save as save_ours
from yolo_prune.models.safe_pickle import CorruptCheckpoint, RefusedGlobal
from yolo_prune.models.validate import ModelSpecError

ROOT = Path(__file__).resolve().parents[1]
OURS = (ModelSpecError, CorruptCheckpoint, RefusedGlobal)  # the project's own refusal types (ValueError subclasses)
FAST_S = 10.0  # every refusal must end within this many seconds (they take milliseconds)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module", autouse=True)
def warm_meta_kernels():
    """The first meta-device forward of a process loads torch's shape functions (seconds on a busy CPU); pay it
    once here so each case's time measures the refusal itself."""
    from yolo_prune.models.validate import Limits, _probe_activations
    layers = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2.0), torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2))
    for m in layers:
        m.f = -1
    _probe_activations(layers.to("meta"), 3, "warm-up", Limits())


@pytest.fixture
def sentinel(tmp_path):
    s = tmp_path / "PWNED"
    yield s
    assert not s.exists(), "a payload executed: the sentinel file was created"


def refused(fn, path, match: str | None = None, kinds=(ValueError,)):
    """fn() raises one of ``kinds`` (all ValueError subclasses of ours) within FAST_S, naming ``path``."""
    t0 = time.perf_counter()
    with pytest.raises(kinds) as info:
        fn()
    took = time.perf_counter() - t0
    msg = str(info.value)
    assert Path(path).name in msg, f"error does not name the file: {msg}"
    if match:
        assert match.lower() in msg.lower(), msg
    assert took < FAST_S, f"refusal took {took:.1f} s"
    return msg


@pytest.fixture(scope="module")
def v8(tmp_path_factory):
    from yolo_prune.models.ultralytics import build_ultralytics
    return build_ultralytics(H.tiny_v8(), source="tiny")


@pytest.fixture(scope="module")
def v5(yolov5n_pt_module):
    return load(yolov5n_pt_module)


@pytest.fixture(scope="module")
def yolov5n_pt_module():
    from conftest import shared_dir
    root = shared_dir()
    p = root / "weights" / "yolov5n.pt" if root else None
    if p is None or not p.is_file():
        pytest.skip("../shared/weights/yolov5n.pt not available")
    return p


# ------------------------------------------------------------------------------------------------ the attacks
def _nested_yaml(tmp, s):
    return H.write_yaml(tmp / "nested.yaml", H.nested_model_yaml(s)), "not an allowed layer"


def _torchvision_yaml(tmp, s):
    d = H.tiny_v8()
    d["backbone"].insert(0, [-1, 1, "TorchVision", [16, "resnet18", "DEFAULT", True, 2]])
    return H.write_yaml(tmp / "torchvision.yaml", d), "TorchVision"


def _eval_activation_yaml(tmp, s):
    d = H.tiny_v8()
    d["activation"] = H.eval_string(s)
    return H.write_yaml(tmp / "act.yaml", d), "activation"


def _attr_activation_yaml(tmp, s):
    d = H.tiny_v8()
    d["activation"] = "nn.Module.__subclasses__()"
    return H.write_yaml(tmp / "act2.yaml", d), "activation"


def _string_arg_yaml(tmp, s):
    d = H.tiny_v8()
    d["backbone"][0][3] = [8, 3, "d"]  # parse_model would substitute its own local variable 'd'
    return H.write_yaml(tmp / "strarg.yaml", d), "not allowed"


def _alias_bomb_yaml(tmp, s):
    return H.alias_bomb_yaml(tmp / "bomb.yaml"), "max_nodes"


def _python_tag_yaml(tmp, s):
    p = tmp / "tag.yaml"
    p.write_text(f"!!python/object/apply:os.system ['touch {s}']\n")
    return p, "not valid yaml"


def _deep_yaml(tmp, s):
    p = tmp / "deep.yaml"
    p.write_text("nc: 3\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    return p, ""


def _nonutf8_yaml(tmp, s):
    p = tmp / "latin.yaml"
    p.write_bytes(b"nc: 3\nname: \xff\xfe\n")
    return p, "UTF-8"


def _huge_channels_yaml(tmp, s):
    d = H.tiny_v8()
    d["backbone"][0][3] = [50_000_000, 3, 2]
    return H.write_yaml(tmp / "wide.yaml", d), "max_channels"


def _huge_kernel_yaml(tmp, s):
    d = H.tiny_v8()
    d["backbone"][0][3] = [8, 30000, 2]
    return H.write_yaml(tmp / "kernel.yaml", d), "max_kernel"


def _huge_stride_yaml(tmp, s):
    d = H.tiny_v8()
    d["backbone"][0][3] = [8, 3, 60000]
    return H.write_yaml(tmp / "stride.yaml", d), "max_stride"


def _huge_repeats_yaml(tmp, s):
    d = H.tiny_v8()
    d["backbone"].insert(1, [-1, 1_000_000_000, "C2f", [8, True]])
    return H.write_yaml(tmp / "repeats.yaml", d), "max_repeats"


def _many_layers_yaml(tmp, s):
    d = H.tiny_v8()
    d["backbone"] = [[-1, 1, "nn.Identity", []]] * 3000 + d["backbone"]
    return H.write_yaml(tmp / "layers.yaml", d), "max_layers"


def _huge_params_yaml(tmp, s):
    d = H.tiny_v8()
    d["backbone"] = [[-1, 1, "Conv", [16384, 3, 1]], [-1, 1, "Conv", [16384, 3, 1]],
                     [-1, 1, "Conv", [16384, 3, 1]]] + d["backbone"]
    return H.write_yaml(tmp / "params.yaml", d), "max_params"


def _huge_upsample_yaml(tmp, s):
    d = H.tiny_v8()
    d["backbone"].insert(1, [-1, 1, "nn.Upsample", [None, 1000, "nearest"]])
    return H.write_yaml(tmp / "upsample.yaml", d), "max_stride"


def _upsample_chain_yaml(tmp, s):
    """Each factor within the limits, together 64**3 times the input: terabytes of activations."""
    d = H.tiny_v8()
    d["backbone"] = [[-1, 1, "nn.Upsample", [None, 64, "nearest"]]] * 3 + d["backbone"]
    return H.write_yaml(tmp / "upchain.yaml", d), "max_activation"


def _huge_width_yaml(tmp, s):
    d = H.tiny_v8()
    d["scales"] = {"n": [0.33, 1e9, 1024]}
    return H.write_yaml(tmp / "scales.yaml", d), "scales"


def _nan_arg_yaml(tmp, s):
    p = tmp / "nan.yaml"
    p.write_text("nc: 3\nbackbone:\n  - [-1, 1, Conv, [8, .nan, 2]]\nhead:\n  - [[-1], 1, Detect, [nc]]\n")
    return p, "finite"


def _bad_from_yaml(tmp, s):
    d = H.tiny_v8()
    d["head"][0][0] = [99]
    return H.write_yaml(tmp / "from.yaml", d), "from"


def _not_detection_yaml(tmp, s):
    d = H.tiny_v8()
    d["head"] = [[-1, 1, "Conv", [8, 1, 1]]]
    return H.write_yaml(tmp / "nohead.yaml", d), "detection head"


def _v5_nested_yaml(tmp, s):
    d = {"nc": 3, "depth_multiple": 0.33, "width_multiple": 0.25, "anchors": [[10, 13, 16, 30, 33, 23]],
         "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Model", [{"nc": 1}]]],
         "head": [[[-1], 1, "Detect", ["nc", "anchors"]]]}
    return H.write_yaml(tmp / "v5nested.yaml", d), "not an allowed layer"


def _v5_nan_anchors_yaml(tmp, s):
    p = tmp / "v5nan.yaml"
    p.write_text("nc: 3\ndepth_multiple: 0.33\nwidth_multiple: 0.25\nanchors: [[.nan, 13, 16, 30, 33, 23]]\n"
                 "backbone:\n  - [-1, 1, Conv, [64, 6, 2, 2]]\nhead:\n  - [[-1], 1, Detect, [nc, anchors]]\n")
    return p, "finite"


# our own checkpoints: plain dicts that pass torch.load(weights_only=True)
def _spec_nested_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    ck["spec"]["base"] = H.nested_model_yaml(s)
    return H.save(ck, tmp / "spec_nested.pt"), "not an allowed layer"


def _spec_torchvision_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    ck["spec"]["base"]["backbone"].insert(0, [-1, 1, "TorchVision", [16, "resnet18", "DEFAULT", True, 2]])
    return H.save(ck, tmp / "spec_tv.pt"), "TorchVision"


def _spec_alias_bomb_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    ck["spec"]["base"]["junk"] = H.shared_list_bomb()
    return H.save(ck, tmp / "spec_bomb.pt"), "max_nodes"


def _spec_huge_layer_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    name = next(k for k, v in ck["spec"]["layers"].items() if v["type"] == "Conv2d")
    ck["spec"]["layers"][name]["out"] = 1_000_000_000
    return H.save(ck, tmp / "spec_wide.pt"), "max_channels"


def _spec_negative_width_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    name = next(k for k, v in ck["spec"]["layers"].items() if v["type"] == "BatchNorm2d")
    ck["spec"]["layers"][name]["num_features"] = -8
    return H.save(ck, tmp / "spec_negative.pt"), "num_features"


def _spec_version_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    ck["version"] = "x"
    return H.save(ck, tmp / "version.pt"), "version"


def _spec_wrong_shape_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    k = next(k for k, v in ck["state_dict"].items() if v.ndim == 4)
    ck["state_dict"][k] = torch.zeros(1, 1, 1, 1)
    return H.save(ck, tmp / "shape.pt"), "shape"


def _spec_family_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    ck["spec"]["family"] = "evil"
    return H.save(ck, tmp / "family.pt"), "family"


def _spec_darknet_huge_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    ck["spec"] = {"family": "darknet", "base": H.TINY_CFG.replace("filters=8", "filters=50000000"), "nc": 3}
    ck["state_dict"] = {}
    return H.save(ck, tmp / "spec_darknet.pt"), "max_channels"


# ultralytics .pt: pickled model classes whose yaml is the attack
def _ultra_nested_pt(tmp, s, v8):
    m = copy.deepcopy(v8.model)
    m.yaml = H.nested_model_yaml(s)
    return H.save({"ema": m, "model": None}, tmp / "ultra_nested.pt"), "not an allowed layer"


def _ultra_activation_pt(tmp, s, v8):
    m = copy.deepcopy(v8.model)
    m.yaml = {**m.yaml, "activation": H.eval_string(s)}
    return H.save({"ema": m, "model": None}, tmp / "ultra_act.pt"), "activation"


def _ultra_exec_in_train_args_pt(tmp, s, v8):
    return H.ultralytics_training_checkpoint(copy.deepcopy(v8), tmp / "ultra_exec.pt",
                                             extra={"train_args": {"x": H.Exec(s)}}), "posix.system"


def _ultra_hooks_pt(tmp, s, v8):
    """A pickled model whose state_dict hooks hold an allowed callable: state_dict() must not call it."""
    from yolo_prune.models.safe_pickle import _torch_allowed
    m = copy.deepcopy(v8.model)
    m._state_dict_hooks[0] = _torch_allowed()["torch._utils._rebuild_tensor_v2"]
    m.model[0]._forward_pre_hooks[0] = _torch_allowed()["torch._utils._rebuild_tensor_v2"]
    return H.save({"ema": m}, tmp / "ultra_hooks.pt"), None


def _ultra_bad_child_pt(tmp, s, v8):
    m = copy.deepcopy(v8.model)
    m.model._modules["0"] = torch.zeros(3)  # not a module: torch would crash deep in named_modules()
    return H.save({"ema": m}, tmp / "ultra_child.pt"), "expected a Module"


def _ultra_names_bomb_pt(tmp, s, v8):
    m = copy.deepcopy(v8.model)
    m.names = H.shared_list_bomb()
    return H.save({"ema": m}, tmp / "ultra_names.pt"), "max_nodes"


# archives
def _torchscript_pt(tmp, s, v8):
    return H.torchscript_file(tmp / "scripted.pt"), "TorchScript"


def _decoy_member_pt(tmp, s, v8):
    good = H.save({"a": torch.zeros(2)}, tmp / "good.pt")
    members = [("archive/xdata.pkl", H.zip_members(good)[0][1])] + H.zip_members(good)
    return H.save_zip_members(tmp / "decoy.pt", members), "unknown archive layout"


def _duplicate_member_pt(tmp, s, v8):
    good = H.save({"a": torch.zeros(2)}, tmp / "good2.pt")
    members = H.zip_members(good)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        return H.save_zip_members(tmp / "dup.pt", members + [members[0]]), "duplicate"


def _compressed_pt(tmp, s, v8):
    good = H.save({"a": torch.zeros(100000)}, tmp / "good3.pt")
    import zipfile
    return H.save_zip_members(tmp / "deflated.pt", H.zip_members(good), zipfile.ZIP_DEFLATED), "compressed"


def _constants_pkl_pt(tmp, s, v8):
    good = H.save({"a": torch.zeros(2)}, tmp / "good4.pt")
    return H.save_zip_members(tmp / "constants.pt", H.zip_members(good) + [("archive/constants.pkl", b"\x80\x02N.")]), \
        "TorchScript"


def _tar_pt(tmp, s, v8):
    import tarfile
    p = tmp / "legacy_tar.pt"
    inner = tmp / "pickle"
    inner.write_bytes(b"\x80\x02N.")
    with tarfile.open(p, "w") as tf:
        tf.add(inner, arcname="pickle")
    return p, "tar"


def _exec_pt(tmp, s, v8):
    return H.save({"model": H.Exec(s)}, tmp / "exec.pt"), "posix.system"


def _exec_legacy_pt(tmp, s, v8):
    return H.save({"model": H.Exec(s)}, tmp / "exec_legacy.pt", _use_new_zipfile_serialization=False), \
        "posix.system"


def _persistent_id_pt(tmp, s, v8):
    return H.bad_persistent_id_pt(tmp / "pid.pt"), ""


def _truncated_legacy_pt(tmp, s, v8):
    full = H.save(H.our_checkpoint(v8), tmp / "full_legacy.pt", _use_new_zipfile_serialization=False)
    p = tmp / "truncated_legacy.pt"
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return p, ""


def _set_of_range_pt(tmp, s, v8):
    return H.raw_pickle_pt(tmp / "setrange.pt", {"x": H.Call(set, range(10 ** 18))}), "refused"


def _bytearray_pt(tmp, s, v8):
    return H.raw_pickle_pt(tmp / "bytearray.pt", {"x": H.Call(bytearray, 10 ** 13)}), "bytearray"


def _size_of_range_pt(tmp, s, v8):
    return H.raw_pickle_pt(tmp / "size.pt", {"x": H.Call(torch.Size, range(10 ** 18))}), "refused"


def _in_ultralytics_ckpt(name, payload, match):
    def make(tmp, s, v8):
        return H.ultralytics_training_checkpoint(copy.deepcopy(v8), tmp / name, extra={"x": payload}), match
    return make


def _codecs_pt(tmp, s, v8):
    import _codecs
    return _in_ultralytics_ckpt("codecs.pt", H.Call(_codecs.encode, "x", "rot13"), "_codecs")(tmp, s, v8)


def _ndarray_alloc_pt(tmp, s, v8):
    return H.raw_pickle_pt(tmp / "ndarray.pt", {"x": H.Call(np.ndarray, (10 ** 6, 10 ** 6))}), "refused"


def _reconstruct_pt(tmp, s, v8):
    rec = np.ndarray.__reduce__(np.zeros(1))[0]
    return H.raw_pickle_pt(tmp / "reconstruct.pt", {"x": H.Call(rec, np.ndarray, (10 ** 12,), b"b")}), "_reconstruct"


def _object_array_pt(tmp, s, v8):
    class Big:
        def __reduce__(self):
            rec = np.ndarray.__reduce__(np.zeros(1))[0]
            return (rec, (np.ndarray, (0,), b"b"), (1, (10 ** 10,), np.dtype("O"), False, []))
    return _in_ultralytics_ckpt("objarray.pt", Big(), "shape")(tmp, s, v8)


def _numpy_scalar_bomb_pt(tmp, s, v8):
    """numpy's scalar(dtype) without its bytes mallocs and zero-fills dtype.itemsize bytes (here 100 MB each; a
    real attack repeats it with 2 GB dtypes)."""
    scalar = np.float64(0).__reduce__()[0]
    big = H.Call(scalar, H.Call(np.dtype, "V100000000"))
    return _in_ultralytics_ckpt("scalar_bomb.pt", [big, big], "scalar")(tmp, s, v8)


def _object_subarray_pt(tmp, s, v8):
    """An object array of one item whose dtype is a 10**7-object subarray: numpy zero-fills 80 MB per item."""
    class Big:
        def __reduce__(self):
            rec = np.ndarray.__reduce__(np.zeros(1))[0]
            return (rec, (np.ndarray, (0,), b"b"), (1, (1,), H.Call(np.dtype, ("O", (10 ** 7,))), False, [None]))
    return _in_ultralytics_ckpt("obj_subarray.pt", Big(), "object dtype")(tmp, s, v8)


def _names_sparse_pt(tmp, s, v8):
    """Class indices 0, 1, 10**11: evaluation sizes its class -> category table by the largest (745 GiB)."""
    m = copy.deepcopy(v8.model)
    m.names = {0: "a", 1: "b", 10 ** 11: "c"}
    return H.save({"ema": m}, tmp / "ultra_sparse_names.pt"), "class indices 0..2"


def _spec_names_sparse_pt(tmp, s, v8):
    ck = H.our_checkpoint(v8)
    ck["spec"]["names"] = ck["names"] = {0: "a", 1: "b", -7: "c"}
    return H.save(ck, tmp / "spec_sparse_names.pt"), "class indices 0..2"


def _tensor_call_pt(tmp, s, v8):
    return H.raw_pickle_pt(tmp / "tensor_call.pt", {"x": H.Call(torch.Tensor, 10 ** 9)}), "refused"


def _tensor_call_ultra_pt(tmp, s, v8):
    return _in_ultralytics_ckpt("tensor_call_u.pt", H.Call(torch.Tensor, 10 ** 9), "refused")(tmp, s, v8)


def _reconstruct_ultra_pt(tmp, s, v8):
    rec = np.ndarray.__reduce__(np.zeros(1))[0]
    return _in_ultralytics_ckpt("reconstruct_u.pt", H.Call(rec, np.ndarray, (10 ** 12,), b"b"), "_reconstruct")(
        tmp, s, v8)


def _empty_pt(tmp, s, v8):
    p = tmp / "empty.pt"
    p.write_bytes(b"")
    return p, "empty"


def _garbage_pt(tmp, s, v8):
    p = tmp / "garbage.pt"
    p.write_bytes(os.urandom(4096))
    return p, ""


# darknet
def _cfg(**kw):
    def make(tmp, s):
        name = "_".join(kw) + ".cfg"
        return H.cfg_with(tmp / name, **kw), ""
    return make


YAML_ATTACKS = {f.__name__[1:]: f for f in (
    _nested_yaml, _torchvision_yaml, _eval_activation_yaml, _attr_activation_yaml, _string_arg_yaml, _alias_bomb_yaml,
    _python_tag_yaml, _deep_yaml, _nonutf8_yaml, _huge_channels_yaml, _huge_kernel_yaml, _huge_stride_yaml,
    _huge_repeats_yaml, _many_layers_yaml, _huge_params_yaml, _huge_upsample_yaml, _upsample_chain_yaml, _huge_width_yaml, _nan_arg_yaml,
    _bad_from_yaml, _not_detection_yaml, _v5_nested_yaml, _v5_nan_anchors_yaml)}
PT_ATTACKS = {f.__name__[1:]: f for f in (
    _spec_nested_pt, _spec_torchvision_pt, _spec_alias_bomb_pt, _spec_huge_layer_pt, _spec_negative_width_pt,
    _spec_version_pt, _spec_wrong_shape_pt, _spec_family_pt, _spec_darknet_huge_pt, _ultra_nested_pt,
    _ultra_activation_pt, _ultra_exec_in_train_args_pt, _ultra_bad_child_pt, _ultra_names_bomb_pt,
    _torchscript_pt, _decoy_member_pt, _duplicate_member_pt,
    _compressed_pt, _constants_pkl_pt, _tar_pt, _exec_pt, _exec_legacy_pt, _persistent_id_pt, _truncated_legacy_pt,
    _set_of_range_pt, _bytearray_pt, _size_of_range_pt, _codecs_pt, _ndarray_alloc_pt, _reconstruct_pt,
    _object_array_pt, _tensor_call_pt, _tensor_call_ultra_pt, _reconstruct_ultra_pt, _empty_pt, _garbage_pt,
    _numpy_scalar_bomb_pt, _object_subarray_pt, _names_sparse_pt, _spec_names_sparse_pt)}
CFG_ATTACKS = {
    "filters_huge": _cfg(filters="50000000"), "size_huge": _cfg(size="30000"), "stride_huge": _cfg(stride="100000"),
    "channels_zero": _cfg(channels="0"), "classes_negative": _cfg(classes="-4"), "anchors_nan": _cfg(anchors="nan,14, 23,27, 37,58"),
    "scale_nan": _cfg(scale_x_y="nan"), "width_huge": _cfg(width="99999999"), "mask_out_of_range": _cfg(mask="0,1,9"),
    "upsample_chain": lambda tmp, s: (tmp.joinpath("upchain.cfg").write_text(H.TINY_CFG.replace(
        "[maxpool]", "[upsample]\nstride=64\n\n[upsample]\nstride=64\n\n[maxpool]")) and tmp / "upchain.cfg",
        "resolution"),
}


@pytest.mark.parametrize("name", sorted(YAML_ATTACKS))
def test_hostile_yaml_is_refused_by_load(tmp_path, sentinel, name):
    path, match = YAML_ATTACKS[name](tmp_path, sentinel)
    refused(lambda: load(path), path, match, kinds=OURS)


@pytest.mark.parametrize("name", sorted(PT_ATTACKS))
def test_hostile_checkpoint_is_refused_by_load(tmp_path, sentinel, v8, name):
    path, match = PT_ATTACKS[name](tmp_path, sentinel, v8)
    refused(lambda: load(path), path, match, kinds=OURS)


@pytest.mark.parametrize("name", sorted(CFG_ATTACKS))
def test_hostile_darknet_cfg_is_refused_by_load(tmp_path, sentinel, name):
    path, match = CFG_ATTACKS[name](tmp_path, sentinel)
    refused(lambda: load(path), path, match)


def test_pickled_hooks_are_dropped_not_called(tmp_path, v8, monkeypatch):
    """The hooks a pickle carries never run: the model loads with the file's weights and no hooks."""
    path, _ = _ultra_hooks_pt(tmp_path, None, v8)
    got = load(path)
    assert all(not m._forward_pre_hooks and not m._state_dict_hooks for m in got.modules())
    assert all(torch.equal(a, b) for a, b in zip(got.model.state_dict().values(), v8.model.state_dict().values()))


def test_all_nan_darknet_weights_are_refused(tmp_path):
    cfg = H.cfg_with(tmp_path / "ok.cfg")
    det = load(cfg)
    from yolo_prune.models.darknet import weights_float_count
    w = tmp_path / "ok.weights"
    header = np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<i8").tobytes()
    w.write_bytes(header + np.full(weights_float_count(det), np.nan, "<f4").tobytes())
    refused(lambda: load(cfg, weights=w), w, "NaN")


def test_limits_are_configurable(tmp_path, monkeypatch):
    """The same model is refused under a lower limit and loads again when the limit is raised."""
    p = H.write_yaml(tmp_path / "tiny.yaml", H.tiny_v8())
    load(p)
    monkeypatch.setenv("YOLO_PRUNE_MAX_PARAMS", "1000")
    msg = refused(lambda: load(p), p, "max_params")
    assert "YOLO_PRUNE_MAX_PARAMS" in msg
    monkeypatch.setenv("YOLO_PRUNE_MAX_PARAMS", str(2 ** 31))
    load(p)


# ------------------------------------------------------------------------------------------------ entry points
def _tool(name):
    spec = importlib.util.spec_from_file_location(f"hostile_tool_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from yolo_prune.data.synthetic import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("data"), n_train=2, n_val=1, imgsz=64, nc=3)


def _argv(tool, weights, data, out):
    image = next((data.parent / "images" / "val").glob("*.jpg")) if data else None
    return {
        "prune": ["--weights", str(weights), "--ratio", "0.5", "--out", str(out / "p.pt"), "--imgsz", "64"],
        "sparse_train": ["--weights", str(weights), "--data", str(data), "--epochs", "1", "--imgsz", "64",
                         "--out", str(out / "sparse")],
        "finetune": ["--weights", str(weights), "--data", str(data), "--epochs", "1", "--imgsz", "64",
                     "--out", str(out / "ft")],
        "eval_coco": ["--weights", str(weights), "--data", str(data), "--imgsz", "64"],
        "export_onnx": ["--weights", str(weights), "--imgsz", "64", "--out", str(out / "m.onnx")],
        "predict": ["--weights", str(weights), "--source", str(image), "--imgsz", "64", "--out", str(out / "pred")],
        "pipeline": ["--weights", str(weights), "--data", str(data), "--ratio", "0.5", "--imgsz", "64",
                     "--out", str(out / "pipe")],
    }[tool]


def run_tool_in_process(tool: str, argv: list[str], capsys) -> str:
    """main(argv) either raises one of our ValueErrors or prints 'error: ...' and returns / exits non-zero."""
    try:
        rc = _tool(tool).main(argv)
    except SystemExit as e:
        rc = e.code
    except (ValueError, FileNotFoundError) as e:
        return str(e)
    err = capsys.readouterr().err
    assert rc not in (0, None), f"{tool} accepted a hostile file"
    return err


TOOLS = ["prune", "sparse_train", "finetune", "eval_coco", "export_onnx", "predict", "pipeline"]
ENTRY_ATTACKS = {"nested_spec_pt": lambda t, s, v8: _spec_nested_pt(t, s, v8),
                 "torchscript_pt": lambda t, s, v8: _torchscript_pt(t, s, v8),
                 "ultra_nested_pt": lambda t, s, v8: _ultra_nested_pt(t, s, v8),
                 "nested_yaml": lambda t, s, v8: _nested_yaml(t, s),
                 "huge_cfg": lambda t, s, v8: _cfg(filters="50000000")(t, s)}


@pytest.mark.parametrize("attack", sorted(ENTRY_ATTACKS))
@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_refuses_hostile_models(tmp_path, sentinel, v8, tiny_data, capsys, tool, attack):
    if tool == "pipeline" and attack == "nested_yaml":
        pytest.skip("the pipeline takes .pt/.cfg weights; a yaml is a --model architecture (covered by load)")
    weights, _ = ENTRY_ATTACKS[attack](tmp_path, sentinel, v8)
    t0 = time.perf_counter()
    msg = run_tool_in_process(tool, _argv(tool, weights, tiny_data, tmp_path), capsys)
    assert weights.name in msg, f"{tool}: {msg}"
    assert time.perf_counter() - t0 < FAST_S * 3
    assert not (tmp_path / "p.pt").exists() and not (tmp_path / "m.onnx").exists()


def test_tool_prints_one_line_error_not_a_traceback(tmp_path, v8):
    """As a user runs it: exit code 2, one 'error:' line naming the file, no traceback."""
    bad, _ = _torchscript_pt(tmp_path, tmp_path / "PWNED", v8)
    for tool in ("prune",):
        argv = ["--weights", str(bad), "--out", str(tmp_path / "o.pt")] + (["--ratio", "0.5"] if tool == "prune"
                                                                            else ["--source", str(bad)])
        r = subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), *argv], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln]
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
        assert bad.name in lines[0]


# ------------------------------------------------------------------------------------------------ training checkpoints
def test_yolov5_training_checkpoint_loads_model_and_ignores_the_rest(tmp_path, v5, sentinel):
    """A last.pt as yolov5's train.py writes it (optimizer, vars(opt), numpy, bytes, paths) loads its EMA."""
    det = copy.deepcopy(v5)
    p = H.yolov5_training_checkpoint(det, tmp_path / "last.pt")
    from yolo_prune.models.safe_pickle import pickle_globals
    g = pickle_globals(p)
    assert {"_codecs.encode", "models.yolo.DetectionModel"} <= g and any("_reconstruct" in x for x in g)
    got = load(p)
    ema = {k: v.float() for k, v in det.model.half().state_dict().items() if not k.endswith("anchor_grid")}
    for k, v in got.model.state_dict().items():
        assert torch.equal(v, ema[k]), k
    # the same file with a payload inside vars(opt) is refused
    bad = H.yolov5_training_checkpoint(copy.deepcopy(v5), tmp_path / "last_evil.pt", {"x": H.Exec(sentinel)})
    refused(lambda: load(bad), bad, "posix.system")


def test_ultralytics_training_checkpoint_loads(tmp_path, v8, sentinel):
    det = copy.deepcopy(v8)
    p = H.ultralytics_training_checkpoint(det, tmp_path / "last.pt")
    got = load(p)
    ema = det.model.half().state_dict()
    for k, v in got.model.state_dict().items():
        assert torch.equal(v, ema[k].float()), k


def test_own_checkpoints_still_load(tmp_path, v8):
    p = save_ours(v8, tmp_path / "ok.pt")
    got = load(p)
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), v8.state_dict().values()))


# ------------------------------------------------------------------------------------------------ evaluation inputs
def _eval_case(tmp_path, images, annotations, categories=None):
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    H.write_jpeg(img_dir / "1.jpg")
    return img_dir, H.coco_json(tmp_path / "ann.json", images, annotations, categories)


GOOD_IMAGE = {"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}
GOOD_ANN = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0}
JSON_ATTACKS = {
    "nan_bbox": ([GOOD_IMAGE], [{**GOOD_ANN, "bbox": [float("nan"), 4, 20, 20]}], "finite"),
    "inf_bbox": ([GOOD_IMAGE], [{**GOOD_ANN, "bbox": [4, 4, float("inf"), 20]}], "finite"),
    "negative_bbox": ([GOOD_IMAGE], [{**GOOD_ANN, "bbox": [4, 4, -20, 20]}], "w, h > 0"),
    "scalar_bbox": ([GOOD_IMAGE], [{**GOOD_ANN, "bbox": 5}], "bbox"),
    "string_bbox": ([GOOD_IMAGE], [{**GOOD_ANN, "bbox": ["4", 4, 20, 20]}], "finite"),
    "list_image_id": ([{**GOOD_IMAGE, "id": [1]}], [GOOD_ANN], "integer"),
    "string_image_id": ([{**GOOD_IMAGE, "id": "1"}], [GOOD_ANN], "integer"),
    "float_image_id": ([{**GOOD_IMAGE, "id": 1.0}], [GOOD_ANN], "integer"),
    "duplicate_image_id": ([GOOD_IMAGE, {**GOOD_IMAGE, "file_name": "2.jpg"}], [GOOD_ANN], "duplicate"),
    "unknown_image_id": ([GOOD_IMAGE], [{**GOOD_ANN, "image_id": 7}], "not the id"),
    "unknown_category": ([GOOD_IMAGE], [{**GOOD_ANN, "category_id": 9}], "category"),
    "duplicate_ann_id": ([GOOD_IMAGE], [GOOD_ANN, GOOD_ANN], "unique"),
    "missing_bbox": ([GOOD_IMAGE], [{k: v for k, v in GOOD_ANN.items() if k != "bbox"}], "bbox"),
    "bad_iscrowd": ([GOOD_IMAGE], [{**GOOD_ANN, "iscrowd": "yes"}], "iscrowd"),
    # pycocotools and the class -> category table hold ids in int64: larger ones crashed with OverflowError
    "huge_image_id": ([{**GOOD_IMAGE, "id": 2 ** 64}], [{**GOOD_ANN, "image_id": 2 ** 64}], "64-bit"),
    "huge_category_id": ([GOOD_IMAGE], [{**GOOD_ANN, "category_id": 2 ** 64}], "64-bit"),
}


class _Perfect:
    """A 'model' that predicts nothing: with NaN ground truth accepted it would have scored 1.0."""
    names = {0: "a"}
    stride = 32

    def __call__(self, x):
        return torch.zeros(x.shape[0], 0, 5)


@pytest.mark.parametrize("name", sorted(JSON_ATTACKS))
def test_hostile_coco_json_is_refused(tmp_path, name):
    from yolo_prune.eval.coco import _check_annotations, _read_ann
    images, anns, match = JSON_ATTACKS[name]
    _, ann = _eval_case(tmp_path, images, anns)
    gt, source = _read_ann(ann)
    refused(lambda: _check_annotations(gt, source), ann, match)


def test_missing_iscrowd_and_area_default(tmp_path):
    from yolo_prune.eval.coco import _check_annotations
    ann = {k: v for k, v in GOOD_ANN.items() if k not in ("iscrowd", "area", "id")}
    gt = _check_annotations({"images": [GOOD_IMAGE], "annotations": [ann], "categories": [{"id": 1, "name": "a"}]},
                            "x.json")
    assert gt["annotations"][0]["iscrowd"] == 0 and gt["annotations"][0]["area"] == 400 and \
        gt["annotations"][0]["id"] == 1


def test_hostile_json_files(tmp_path):
    from yolo_prune.eval.coco import _read_ann
    p = tmp_path / "bytes.json"
    p.write_bytes(b'{"images": [\xff]}')
    refused(lambda: _read_ann(p), p, "UTF-8")
    p = tmp_path / "deep.json"
    p.write_text("[" * 100000 + "]" * 100000)
    refused(lambda: _read_ann(p), p, "")
    p = tmp_path / "digits.json"  # past Python's 4300-digit int limit: a ValueError that did not name the file
    p.write_text('{"images": [{"id": 1' + "0" * 5000 + ', "file_name": "1.jpg"}]}')
    refused(lambda: _read_ann(p), p, "digits")


def test_category_id_beyond_int64_is_refused_by_evaluate(tmp_path):
    """Before the check, evaluate crashed with an OverflowError traceback filling its category table."""
    from yolo_prune.eval.coco import evaluate
    img_dir, ann = _eval_case(tmp_path, [GOOD_IMAGE], [{**GOOD_ANN, "category_id": 2 ** 64}],
                              categories=[{"id": 2 ** 64, "name": "a"}])
    refused(lambda: evaluate(_Perfect(), img_dir, ann, imgsz=64, verbose=False), ann, "64-bit")


@pytest.mark.parametrize("entry,match", [("images", "a folder"), ("/", "a folder"), ("fifo.jpg", "special file"),
                                         (b"\xff.jpg", "UTF-8")])
def test_hostile_image_list_file_is_refused(tmp_path, entry, match):
    """A .txt image list naming '/' made evaluation walk the whole filesystem (the list's entries are listed again
    as sources); a FIFO would block the image reader; non-UTF-8 gave an error without the file name."""
    from yolo_prune.eval.coco import evaluate
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    H.write_jpeg(root / "images" / "1.jpg")
    os.mkfifo(root / "fifo.jpg")
    lst = root / "val.txt"
    lst.write_bytes(b"images/1.jpg\n" + (entry if isinstance(entry, bytes) else entry.encode()) + b"\n")
    (root / "d.yaml").write_text(f"path: {root}\ntrain: val.txt\nval: val.txt\nnames: [a]\n")
    refused(lambda: evaluate(_Perfect(), data=root / "d.yaml", imgsz=64, verbose=False), lst, match)


@pytest.mark.parametrize("line,why", [("0 nan 0.5 0.1 0.1", "NaN"), ("inf 0.5 0.5 0.1 0.1", "NaN"),
                                      ("nan 0.5 0.5 0.1 0.1", "NaN"), ("0 0.5 0.5 -0.1 0.1", "negative"),
                                      ("5 0.5 0.5 0.1 0.1", "class"), ("0.5 0.5 0.5 0.1 0.1", "class"),
                                      ("0 0.5 0.5 0.1", "expected 5 values"), ("0 0.5 0.5 0 0.1", "zero")])
def test_eval_label_reader_uses_the_training_rules(tmp_path, line, why):
    """Each bad line is skipped and reported by the eval reader exactly as the training parser does."""
    from yolo_prune.data.coco import read_yolo_labels
    from yolo_prune.data.yolo import parse_label_file
    p = tmp_path / "l.txt"
    p.write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    problems: list = []
    rows = read_yolo_labels(p, nc=3, problems=problems)
    lb, train_problems = parse_label_file(p, 3)
    assert len(rows) == len(lb) == 1 and len(problems) == len(train_problems) == 1
    assert why.lower() in problems[0].lower() and f"{p}:2" in problems[0]


def test_nonutf8_label_file_is_reported(tmp_path):
    from yolo_prune.data.coco import read_yolo_labels
    p = tmp_path / "bin.txt"
    p.write_bytes(b"0 0.5 0.5 0.2 \xff\n")
    refused(lambda: read_yolo_labels(p, nc=3), p, "UTF-8")


def test_nan_labels_cannot_fake_a_perfect_score(tmp_path):
    """yolo->coco conversion drops the NaN boxes, so the empty model scores 0, not 1."""
    from yolo_prune.eval.coco import evaluate
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    H.write_jpeg(root / "images" / "1.jpg")
    (root / "labels" / "1.txt").write_text("0 nan nan nan nan\n0 0.5 0.5 0.2 0.2\n")
    (root / "d.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnames: [a]\n")
    with pytest.warns(UserWarning, match="bad label line"):
        r = evaluate(_Perfect(), data=root / "d.yaml", imgsz=64, verbose=False)
    assert r["mAP50-95"] == 0.0 and r["ground_truth_boxes"] == 1


def test_truncated_jpeg_is_counted_and_bomb_refused(tmp_path):
    from yolo_prune.data.coco import image_size
    from yolo_prune.eval.coco import evaluate
    img_dir, ann = _eval_case(tmp_path, [GOOD_IMAGE, {**GOOD_IMAGE, "id": 2, "file_name": "2.jpg"}],
                              [GOOD_ANN])
    H.write_jpeg(img_dir / "2.jpg", truncate=200)
    with pytest.warns(UserWarning, match="truncated"):
        r = evaluate(_Perfect(), img_dir, ann, imgsz=64, verbose=False)
    assert r["truncated_images"] == [str(img_dir / "2.jpg")] and r["images"] == 2
    bomb = H.decompression_bomb_png(tmp_path / "bomb.png")
    refused(lambda: image_size(bomb), bomb, "decompression bomb")


# ------------------------------------------------------------------------------------------------ data yaml
def _data_yaml(tmp, body: bytes):
    (tmp / "images").mkdir(exist_ok=True)
    p = tmp / "data.yaml"
    p.write_bytes(body)
    return p


DATA_YAML_ATTACKS = {
    "alias_bomb": (b"a0: &a0 [x, x]\n" + b"".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n".encode()
                                                   for i in range(1, 45)) + b"train: images\nval: images\nnames: *a44\n",
                   "max_nodes"),
    "python_tag": (b"train: !!python/object/apply:os.system ['touch PWNED']\nval: images\nnames: [a]\n", "yaml"),
    "list_names_key": (b"train: images\nval: images\nnames: {[1]: a}\n", "names"),
    "float_nc": (b"train: images\nval: images\nnames: [a]\nnc: [1]\n", "nc"),
    "not_utf8": (b"train: images\nval: images\nnames: [\xff]\n", "UTF-8"),
    "dict_train": (b"train: {a: 1}\nval: images\nnames: [a]\n", "train"),
}


@pytest.mark.parametrize("name", sorted(DATA_YAML_ATTACKS))
def test_hostile_data_yaml_is_refused(tmp_path, sentinel, capsys, name):
    from yolo_prune.data.sources import load_data_yaml
    body, match = DATA_YAML_ATTACKS[name]
    p = _data_yaml(tmp_path, body)
    refused(lambda: load_data_yaml(p), p, match)
    msg = run_tool_in_process("eval_coco", ["--weights", "yolov8n.yaml", "--data", str(p), "--imgsz", "64"], capsys)
    assert p.name in msg


# ------------------------------------------------------------------------------------------------ onnx files
ONNX_ATTACKS = {
    # every image is padded to a multiple of the largest stride: 200000 made a 120 GB canvas per image
    "huge_stride": ({"strides": "[200000]"}, "strides[0]"),
    "nan_stride": ({"strides": "[NaN]"}, "strides[0]"),
    "zero_stride": ({"strides": "[0]"}, "strides[0]"),
    "string_strides": ({"strides": '"abc"'}, "strides"),
    # the class -> category table has (largest index + 1) entries: 745 GiB
    "sparse_names": ({"names": '{"100000000000": "a"}'}, "class indices"),
    "list_of_numbers_names": ({"names": '{"x": "a"}'}, "integer class indices"),
    # a fixed input size is allocated (and padded) per batch: 30000 images of 64x64, or one 30000x30000 canvas
    "huge_static_batch": ({"dims": (30000, 3, 64, 64)}, "max_activation"),
    "huge_static_image": ({"dims": (1, 3, 30000, 30000)}, "max_activation"),
}


@pytest.mark.parametrize("name", sorted(ONNX_ATTACKS))
def test_hostile_onnx_metadata_and_shapes_are_refused(tmp_path, name):
    from yolo_prune.runtime.ort import OrtDetector
    kw, match = ONNX_ATTACKS[name]
    p = H.tiny_onnx(tmp_path / f"{name}.onnx", **kw)
    refused(lambda: OrtDetector(p), p, match)


def test_hostile_onnx_files_give_one_line_errors(tmp_path, capsys):
    """Garbage ONNX (onnxruntime's RuntimeError was a traceback in the tools) and a sidecar json with wrong
    types (a ZeroDivisionError / TypeError traceback in the benchmark)."""
    from yolo_prune.export.benchmark import _Entry
    img_dir, ann = _eval_case(tmp_path, [GOOD_IMAGE], [GOOD_ANN])
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(os.urandom(200))
    msg = run_tool_in_process("eval_coco", ["--weights", str(bad), "--images", str(img_dir), "--ann", str(ann),
                                            "--imgsz", "64"], capsys)
    assert bad.name in msg and "onnxruntime could not load" in msg
    good = H.tiny_onnx(tmp_path / "good.onnx")
    side = tmp_path / "good.onnx.json"
    for body, field in (('{"imgsz": [0, 0], "macs": 5}', "imgsz"), ('{"macs": "x"}', "macs"), ("[1]", "object")):
        side.write_text(body)
        refused(lambda: _Entry(good, "m", (64, 64)), side, field)
    side.unlink()
    from yolo_prune.runtime.ort import OrtDetector
    assert OrtDetector(good).names == {0: "a"}  # the checks pass a well-formed file
