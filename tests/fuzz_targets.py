"""Fuzz targets and hypothesis strategies shared by tests/test_fuzz.py and benchmarks/fuzz.py.

Each target takes one generated input and may only return or raise one of ``ALLOWED`` (the project's own error
types are all ValueError subclasses). Anything else is a bug.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import strategies as st

from hostile import TINY_CFG  # the hostile suite's tiny darknet cfg is the fuzzers' seed too

ALLOWED = (ValueError, FileNotFoundError)
# small limits keep fuzzed builds cheap; the code paths are the same as with the defaults
FUZZ_ENV = {"YOLO_PRUNE_MAX_PARAMS": "2000000", "YOLO_PRUNE_MAX_CHANNELS": "256", "YOLO_PRUNE_MAX_LAYERS": "64",
            "YOLO_PRUNE_MAX_NODES": "20000"}

_NUMBERS = st.one_of(st.integers(-3, 70), st.integers(-2 ** 70, 2 ** 70),
                     st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 1, 2, 3, 8, 16, 32]))
_WORDS = st.sampled_from(["nc", "anchors", "None", "True", "nearest", "d", "__import__('os')", "", "x" * 50,
                          "nn.SiLU()", "1e9"])
_LEAF = st.one_of(_NUMBERS, _WORDS, st.booleans(), st.none(), st.text(max_size=8))

# ------------------------------------------------------------------------------------------------ darknet cfg
_CFG_KEYS = {
    "net": ["width", "height", "channels", "batch"],
    "convolutional": ["filters", "size", "stride", "pad", "padding", "groups", "batch_normalize", "activation"],
    "maxpool": ["size", "stride", "padding"],
    "upsample": ["stride"],
    "route": ["layers", "groups", "group_id"],
    "shortcut": ["from", "activation"],
    "yolo": ["mask", "anchors", "classes", "num", "scale_x_y", "jitter"],
}
_CFG_VALUES = st.one_of(st.integers(-5, 40).map(str), st.sampled_from(
    ["leaky", "linear", "mish", "logistic", "nan", "inf", "-1", "0", "1,2", "-1,-3", "10,14, 23,27, 37,58",
     "0,1,2", "50000000", "1e400", "", "x", "1_0", "9" * 30, "-2,0"]), st.text(max_size=6))


@st.composite
def cfg_texts(draw):
    kinds = ["net"] + draw(st.lists(st.sampled_from(list(_CFG_KEYS)[1:]), min_size=0, max_size=10))
    if draw(st.booleans()):
        kinds.append("yolo")
    lines = []
    for kind in kinds:
        lines.append(f"[{kind}]" if draw(st.integers(0, 30)) else draw(st.sampled_from(["[bogus]", "[net", "["])))
        for key in draw(st.lists(st.sampled_from(_CFG_KEYS[kind]), max_size=6, unique=True)):
            lines.append(f"{key}={draw(_CFG_VALUES)}")
        if not draw(st.integers(0, 20)):
            lines.append(draw(st.text(max_size=12)))
    return "\n".join(lines) + "\n"




@st.composite
def mutated_cfgs(draw):
    """A valid cfg with a few values replaced, lines dropped or duplicated: most still build."""
    lines = TINY_CFG.splitlines()
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["value", "drop", "dup"]))
        if op == "value" and "=" in lines[i]:
            lines[i] = lines[i].split("=")[0] + "=" + draw(_CFG_VALUES)
        elif op == "drop":
            del lines[i]
        else:
            lines.insert(i, lines[i])
    return "\n".join(lines) + "\n"


def cfg_strategy():
    return st.one_of(cfg_texts(), mutated_cfgs())


def cfg_target(text: str) -> None:
    from yolo_prune.models.darknet import build_darknet
    det = build_darknet(text, source="fuzz.cfg")
    assert det.nc >= 1


# ------------------------------------------------------------------------------------------------ model yaml / spec
_MODULES = st.sampled_from(["Conv", "C2f", "SPPF", "Concat", "Detect", "nn.Upsample", "nn.MaxPool2d", "C3", "Bottleneck",
                            "DetectionModel", "TorchVision", "nn.Linear", "eval", "SPP", "nn.Identity", "DWConv",
                            "v10Detect", "C3k2", "nn.BatchNorm2d"])
_ARGS = st.lists(st.one_of(_LEAF, st.lists(st.one_of(_NUMBERS, _WORDS), max_size=4)), max_size=5)


@st.composite
def yaml_dicts(draw):
    """Layer tables near the real shape (so the validator's deep paths run) plus arbitrary nested junk."""
    n_rows = draw(st.integers(0, 8))
    rows = []
    for _ in range(n_rows):
        row = [draw(st.one_of(st.integers(-4, 4), st.lists(st.integers(-4, 8), max_size=3), _LEAF)),
               draw(st.one_of(st.integers(0, 4), _NUMBERS)), draw(st.one_of(_MODULES, _LEAF)), draw(_ARGS)]
        if not draw(st.integers(0, 15)):
            row = draw(st.one_of(_LEAF, st.lists(_LEAF, max_size=6)))
        rows.append(row)
    if rows and draw(st.booleans()):
        rows[-1] = [[-1] if draw(st.booleans()) else list(range(-min(3, n_rows), 0)), 1, "Detect", ["nc"]]
    split = draw(st.integers(0, len(rows)))
    d = {"nc": draw(st.one_of(st.integers(-2, 100), _LEAF)), "backbone": rows[:split], "head": rows[split:]}
    for key, strat in (("depth_multiple", _NUMBERS), ("width_multiple", _NUMBERS), ("activation", _WORDS),
                       ("scales", st.dictionaries(st.sampled_from("nsm"), st.lists(_NUMBERS, max_size=4), max_size=2)),
                       ("scale", st.sampled_from("nsmx")), ("anchors", st.lists(st.lists(_NUMBERS, max_size=6),
                                                                               max_size=3)),
                       ("junk", st.recursive(_LEAF, lambda c: st.lists(c, max_size=4) |
                                             st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=20))):
        if draw(st.booleans()):
            d[key] = draw(strat)
    if not draw(st.integers(0, 10)):
        del d[draw(st.sampled_from(["backbone", "head", "nc"]))]
    return d


TINY_YAML = {"nc": 3, "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]],
                                   [-1, 1, "C2f", [16, True]], [-1, 1, "SPPF", [16, 5]]],
             "head": [[-1, 1, "nn.Upsample", [None, 2, "nearest"]], [-1, 1, "Conv", [16, 3, 2]],
                      [[-1, 3], 1, "Concat", [1]], [[-1], 1, "Detect", ["nc"]]]}


@st.composite
def mutated_yamls(draw):
    """A valid yaml with a few args, repeats, sources or modules replaced: many still build."""
    import copy
    d = copy.deepcopy(TINY_YAML)
    rows = d["backbone"] + d["head"]
    for _ in range(draw(st.integers(0, 3))):
        row = rows[draw(st.integers(0, len(rows) - 1))]
        field = draw(st.integers(0, 3))
        if field == 3 and row[3]:
            row[3][draw(st.integers(0, len(row[3]) - 1))] = draw(st.one_of(st.integers(-2, 40), _LEAF))
        elif field == 2:
            row[2] = draw(_MODULES)
        elif field == 1:
            row[1] = draw(st.one_of(st.integers(0, 3), _NUMBERS))
        else:
            row[0] = draw(st.one_of(st.integers(-3, 3), st.lists(st.integers(-3, 6), max_size=3)))
    if draw(st.booleans()):
        d[draw(st.sampled_from(["activation", "width_multiple", "depth_multiple", "nc"]))] = draw(
            st.one_of(_NUMBERS, _WORDS, st.sampled_from(["nn.ReLU()", "nn.LeakyReLU(0.1)", "torch.nn.SiLU()"])))
    return d


def yaml_strategy():
    return st.one_of(yaml_dicts(), mutated_yamls())


def yaml_check_target(d) -> None:
    """The whole-structure validator alone (every model description passes it before anything is built)."""
    from yolo_prune.models.validate import check_yaml_architecture
    check_yaml_architecture(d, "fuzz.yaml", heads=("Detect", "v10Detect"))


def yaml_target(d) -> None:
    """The validator, then (when it passes) the real build through build_ultralytics / build_yolov5."""
    from yolo_prune.models.validate import check_yaml_architecture
    check_yaml_architecture(d, "fuzz.yaml")
    if "anchors" in d:
        from yolo_prune.models.yolov5_legacy import build_yolov5
        build_yolov5(d, source="fuzz.yaml")
    else:
        from yolo_prune.models.ultralytics import build_ultralytics
        build_ultralytics(d, source="fuzz.yaml")


def spec_target(spec) -> None:
    from yolo_prune.models import build_from_spec
    build_from_spec(spec, source="fuzz.pt")


@st.composite
def specs(draw):
    if draw(st.booleans()):  # near-valid: a buildable base (mutated) and real-looking layer records
        family = draw(st.sampled_from(["ultralytics", "darknet"]))
        base = draw(mutated_yamls()) if family == "ultralytics" else draw(mutated_cfgs())
        layers = draw(st.one_of(st.none(), st.dictionaries(
            st.sampled_from(["model.model.0.conv", "model.model.0.bn", "model.layers.0.conv", "model.layers.0.bn",
                             "model.model.1.conv", "nope"]),
            st.one_of(st.fixed_dictionaries({"type": st.just("Conv2d"), "in": st.integers(-1, 40),
                                             "out": st.integers(-1, 40), "groups": st.integers(0, 4),
                                             "bias": st.booleans()}),
                      st.fixed_dictionaries({"type": st.just("BatchNorm2d"), "num_features": st.integers(-1, 40)})),
            max_size=2)))
        return {"family": family, "base": base, "layers": layers, "nc": draw(st.one_of(st.none(), st.integers(0, 5)))}
    return {"family": draw(st.sampled_from(["ultralytics", "yolov5", "darknet", "evil"])),
            "base": draw(st.one_of(yaml_dicts(), cfg_texts(), _LEAF)),
            "layers": draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=10), st.dictionaries(
                st.sampled_from(["type", "in", "out", "groups", "bias", "num_features"]),
                st.one_of(_NUMBERS, st.sampled_from(["Conv2d", "BatchNorm2d", "Linear"])), max_size=5),
                max_size=3))),
            "nc": draw(st.one_of(st.none(), _NUMBERS))}


# ------------------------------------------------------------------------------------------------ YOLO labels
_LABEL_TOKENS = st.one_of(st.sampled_from(["0", "1", "2", "0.5", "1.0", "1.02", "-0.1", "nan", "inf", "-inf", "1e308",
                                           "0x10", "1_0", "", "\x00", "0.0", "3.0", "2.5", "1e-9"]),
                          st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=4))


@st.composite
def label_files(draw):
    if not draw(st.integers(0, 10)):
        return draw(st.binary(max_size=200))
    lines = [" ".join(draw(st.lists(_LABEL_TOKENS, max_size=9))) for _ in range(draw(st.integers(0, 8)))]
    return "\n".join(lines).encode("utf-8", "surrogatepass") if draw(st.booleans()) else \
        "\r\n".join(lines).encode("utf-8", "replace")


def label_target(data: bytes, workdir: str) -> None:
    """The eval reader and the training parser agree, and neither raises on any bytes."""
    import numpy as np

    from yolo_prune.data.coco import read_yolo_labels
    from yolo_prune.data.yolo import parse_label_file
    p = Path(workdir) / "fuzz.txt"
    p.write_bytes(data)
    problems: list = []
    rows = read_yolo_labels(p, nc=3, problems=problems)
    lb, why = parse_label_file(p, 3)
    assert len(rows) == len(lb) and len(problems) == len(why)
    assert np.isfinite(rows).all() and ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()
    assert ((rows[:, 0] >= 0) & (rows[:, 0] < 3)).all() and (rows[:, 3:] > 0).all()


# ------------------------------------------------------------------------------------------------ COCO json
_JSON_LEAF = st.one_of(st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                       st.booleans(), st.none())
_JSON_ANY = st.recursive(_JSON_LEAF, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c,
                                                                                         max_size=3), max_leaves=12)
_BOX = st.one_of(st.lists(st.one_of(st.integers(-2, 50), st.floats(allow_nan=True, allow_infinity=True)),
                          min_size=0, max_size=5), _JSON_LEAF)


@st.composite
def coco_dicts(draw):
    ids = st.one_of(st.integers(0, 4), _JSON_LEAF, st.lists(st.integers(0, 3), max_size=2))
    images = draw(st.lists(st.fixed_dictionaries({"id": ids, "file_name": st.one_of(st.just("a.jpg"), _JSON_LEAF)},
                                                 optional={"width": _JSON_LEAF}), max_size=4))
    anns = draw(st.lists(st.fixed_dictionaries({}, optional={
        "id": ids, "image_id": ids, "category_id": ids, "bbox": _BOX, "iscrowd": _JSON_LEAF, "area": _JSON_LEAF,
        "extra": _JSON_ANY}), max_size=5))
    d = {"images": images, "annotations": anns}
    if draw(st.booleans()):
        d["categories"] = draw(st.one_of(st.lists(st.fixed_dictionaries({"id": ids}, optional={"name": _JSON_LEAF}),
                                                  max_size=3), _JSON_LEAF))
    if not draw(st.integers(0, 10)):
        d = draw(_JSON_ANY)
    return d


def coco_target(d, workdir: str) -> None:
    """Through the json reader (file on disk, NaN written as json NaN) and the annotation validator."""
    from yolo_prune.eval.coco import _check_annotations, _read_ann
    p = Path(workdir) / "fuzz.json"
    p.write_text(json.dumps(d, allow_nan=True))
    gt, source = _read_ann(p)
    checked = _check_annotations(gt, source)
    import math
    for a in checked["annotations"]:
        assert all(math.isfinite(v) for v in a["bbox"]) and a["bbox"][2] > 0 and a["bbox"][3] > 0


def workdir() -> str:
    return tempfile.mkdtemp(prefix="yolo_prune_fuzz_")


def set_fuzz_env() -> dict:
    old = {k: os.environ.get(k) for k in FUZZ_ENV}
    os.environ.update(FUZZ_ENV)
    return old


def restore_env(old: dict) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
