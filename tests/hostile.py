"""Crafting helper for the hostile-input suite: files an attacker would hand to yolo_prune.

Every payload that could execute tries to create ``SENTINEL`` (the caller's path), so a test proves that nothing ran
by checking the file does not exist. Helpers write into a folder and return the path.
"""
from __future__ import annotations

import contextlib
import json
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml

# ------------------------------------------------------------------------------------------------ payloads


class Exec:
    """Unpickles as os.system('touch SENTINEL') (classic REDUCE payload)."""

    def __init__(self, sentinel: Path):
        self.cmd = f"touch {sentinel}"

    def __reduce__(self):
        import os
        return (os.system, (self.cmd,))


class Call:
    """Unpickles as func(*args) for any importable func (REDUCE)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def eval_string(sentinel: Path) -> str:
    """A string that, if eval()'d, creates the sentinel."""
    return f"__import__('os').system('touch {sentinel}')"


# ------------------------------------------------------------------------------------------------ yaml models
def packaged_yaml(name: str = "yolov8n.yaml") -> dict:
    from yolo_prune.models.ultralytics import resolve_model_yaml
    d = resolve_model_yaml(name)
    d.pop("yaml_file", None)
    return d


def tiny_v8(nc: int = 3) -> dict:
    """A very small valid ultralytics detection yaml (fast to build)."""
    return {"nc": nc, "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]],
                                   [-1, 1, "Conv", [16, 3, 2]]],
            "head": [[[-1], 1, "Detect", ["nc"]]]}


def nested_model_yaml(sentinel: Path) -> dict:
    """A row whose module is a model class with a nested architecture dict that eval()s its activation."""
    d = tiny_v8()
    inner = {"nc": 3, "activation": eval_string(sentinel), "backbone": [[-1, 1, "Conv", [8, 3, 2]]],
             "head": [[[-1], 1, "Detect", ["nc"]]]}
    d["backbone"].insert(1, [-1, 1, "DetectionModel", [inner]])
    return d


def write_yaml(path: Path, d) -> Path:
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def alias_bomb_yaml(path: Path, levels: int = 45) -> Path:
    """yaml anchors doubling at every level: 2**levels nodes from a few KB."""
    lines = ["a0: &a0 [1, 1]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]")
    lines += ["nc: 3", "backbone:", f"  - [-1, 1, Conv, [8, 3, 2, *a{levels - 1}]]", "head:",
              "  - [[-1], 1, Detect, [nc]]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def shared_list_bomb(levels: int = 45):
    """The same explosion as plain Python data (pickled with its memo, a few hundred bytes)."""
    x = [1]
    for _ in range(levels):
        x = [x, x]
    return x


# ------------------------------------------------------------------------------------------------ checkpoints
def our_checkpoint(det) -> dict:
    import copy

    from yolo_prune.models.checkpoint import checkpoint_dict
    return copy.deepcopy(checkpoint_dict(det))  # checkpoint_dict shares the spec's dicts with the detector


def save(obj, path: Path, **kw) -> Path:
    torch.save(obj, path, **kw)
    return path


def save_zip_members(path: Path, members: list[tuple[str, bytes]], compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compress) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compress)
    return path


def zip_members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(n, zf.read(n)) for n in zf.namelist()]


def torchscript_file(path: Path) -> Path:
    class M(torch.nn.Module):
        def forward(self, x):
            return x + 1
    torch.jit.save(torch.jit.script(M()), str(path))
    return path


def raw_pickle_pt(path: Path, obj, protocol: int = 2) -> Path:
    """A zip checkpoint whose data.pkl is exactly ``pickle.dumps(obj)`` (no tensors)."""
    data = pickle.dumps(obj, protocol=protocol)
    return save_zip_members(path, [("archive/data.pkl", data), ("archive/byteorder", b"little"),
                                   ("archive/version", b"3\n")])


def bad_persistent_id_pt(path: Path) -> Path:
    """data.pkl whose persistent id is a string, not torch's tuple (torch asserts on it)."""
    body = b"\x80\x02X\x03\x00\x00\x00abcQ."  # PROTO 2, BINUNICODE 'abc', BINPERSID, STOP
    return save_zip_members(path, [("archive/data.pkl", body), ("archive/byteorder", b"little"),
                                   ("archive/version", b"3\n")])


# ------------------------------------------------------------------------------------------------ foreign classes
@contextlib.contextmanager
def pickled_as(mapping: dict):
    """Make ``torch.save`` write our classes under other module names (e.g. yolov5's ``models.common.Conv``).

    ``mapping``: {class: "module.Name"}. Fake modules are registered in sys.modules for the duration only.
    """
    saved, added = {}, []
    try:
        for cls, target in mapping.items():
            module, _, name = target.rpartition(".")
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                mod_name = ".".join(parts[:i])
                if mod_name not in sys.modules:
                    sys.modules[mod_name] = types.ModuleType(mod_name)
                    added.append(mod_name)
            setattr(sys.modules[module], name, cls)
            saved[cls] = (cls.__module__, cls.__qualname__)
            cls.__module__, cls.__qualname__ = module, name
        yield
    finally:
        for cls, (mod, qual) in saved.items():
            cls.__module__, cls.__qualname__ = mod, qual
        for name in added:
            sys.modules.pop(name, None)


def yolov5_training_checkpoint(det, path: Path, opt_extra: dict | None = None) -> Path:
    """What the yolov5 repo's train.py writes as last.pt: model + EMA (half), SGD optimizer state, vars(opt),
    numpy fitness, git info, date; pickled under models.yolo / models.common like the real file."""
    from yolo_prune.models import yolov5_legacy as v5

    model = det.model
    model.hyp = {"lr0": 0.01, "momentum": np.float64(0.937), "fl_gamma": np.float32(0.0), "box": 0.05}
    model.class_weights = torch.ones(det.nc)
    model.nc = det.nc
    opt = torch.optim.SGD([p for p in model.parameters()], lr=0.01, momentum=0.937)
    model(torch.zeros(1, 3, 64, 64))[0].sum().backward()
    opt.step()
    import copy
    import pathlib
    ckpt = {"epoch": 2, "best_fitness": np.array([0.41234]), "model": copy.deepcopy(model).half(),
            "ema": copy.deepcopy(model).half(), "updates": 123, "optimizer": opt.state_dict(),
            "opt": {"weights": "yolov5n.pt", "cfg": "", "epochs": 3, "batch_size": 16, "imgsz": 640,
                    "save_dir": pathlib.Path("runs/train/exp"), "hyp": dict(model.hyp),
                    "seed": np.int64(0), "raw": b"\x00\x01\xffbytes", "resume": False, "evolve": None,
                    **(opt_extra or {})},
            "git": {"remote": "https://github.com/ultralytics/yolov5", "branch": "master", "commit": "abc"},
            "date": "2026-12-01T20:00:00"}
    mapping = {v5.DetectionModel: "models.yolo.DetectionModel", v5.Detect: "models.yolo.Detect"}
    for name in ("Conv", "C3", "Bottleneck", "SPPF", "Concat"):
        mapping[getattr(v5, name)] = f"models.common.{name}"
    with pickled_as(mapping):
        torch.save(ckpt, path)
    return path


def ultralytics_training_checkpoint(det, path: Path, extra: dict | None = None) -> Path:
    """What ultralytics' BaseTrainer.save_model writes during training (ema half, optimizer, train_args,
    train_metrics with numpy values, train_results, stopper, scaler, git...)."""
    import copy
    import pathlib

    import ultralytics

    model = det.model
    opt = torch.optim.AdamW([p for p in model.parameters()], lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    ema = copy.deepcopy(model).half()
    ckpt = {"epoch": 4, "best_fitness": np.float64(0.123), "stopper": {"best_fitness": np.float64(0.123),
                                                                         "best_epoch": 3},
            "model": None, "ema": ema, "updates": 40, "modelopt": None, "optimizer": opt.state_dict(),
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
            "train_args": {"model": "yolov8n.yaml", "data": "coco8.yaml", "epochs": 5, "imgsz": 64,
                           "save_dir": pathlib.Path("runs/detect/train"), "lr0": 0.01},
            "train_metrics": {"metrics/mAP50(B)": np.float64(0.2), "metrics/mAP50-95(B)": np.float32(0.1),
                              "fitness": np.float64(0.123)},
            "train_results": {"epoch": [1, 2], "train/box_loss": [np.float64(1.5), 1.4]},
            "date": "2026-12-01T20:00:00+00:00", "version": ultralytics.__version__,
            "git": {"root": "/x", "branch": "main", "commit": "abc", "message": "m", "origin": "o"},
            "license": "AGPL-3.0", "docs": "https://docs.ultralytics.com", **(extra or {})}
    torch.save(ckpt, path)
    return path


# ------------------------------------------------------------------------------------------------ darknet
TINY_CFG = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=24
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=3
num=3
scale_x_y=1.05
"""


def cfg_with(path: Path, **changes) -> Path:
    """TINY_CFG with ``key=value`` lines replaced (first occurrence): cfg_with(p, filters="50000000")."""
    text = TINY_CFG
    for key, value in changes.items():
        start = text.index(f"\n{key}=") + 1
        end = text.index("\n", start)
        text = text[:start] + f"{key}={value}" + text[end:]
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ data
def write_jpeg(path: Path, size=(64, 48), truncate: int = 0) -> Path:
    import cv2
    img = (np.arange(size[0] * size[1] * 3) % 251).astype(np.uint8).reshape(size[1], size[0], 3)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    data = buf.tobytes()
    path.write_bytes(data[:-truncate] if truncate else data)
    return path


def decompression_bomb_png(path: Path, side: int = 20000) -> Path:
    """A tiny PNG whose header claims side x side pixels (PIL's bomb guard trips on the header)."""
    from PIL import Image
    Image.new("1", (side, side)).save(path, optimize=True)
    return path


def coco_json(path: Path, images: list[dict], annotations: list[dict], categories=None) -> Path:
    d = {"images": images, "annotations": annotations,
         "categories": categories if categories is not None else [{"id": 1, "name": "a"}]}
    path.write_text(json.dumps(d, allow_nan=True))
    return path


# ------------------------------------------------------------------------------------------------ onnx
def tiny_onnx(path: Path, strides: str = "[32]", names: str = '{"0": "a"}', dims=("B", 3, "H", "W")) -> Path:
    """A valid ONNX 'detector' (B, 3, H, W) -> (B, 1, 5) carrying our metadata (names, strides) as given."""
    from onnx import TensorProto, helper, numpy_helper, save
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), n)
             for n, v in (("pads", [0, 0, 0, 0, 0, 2]), ("axes", [2, 3]), ("ax1", [1]))]
    nodes = [helper.make_node("ReduceMean", ["images", "axes"], ["m"], keepdims=0),
             helper.make_node("Unsqueeze", ["m", "ax1"], ["u"]), helper.make_node("Pad", ["u", "pads"], ["output0"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for key, value in (("names", names), ("strides", strides)):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    save(model, str(path))
    return path
