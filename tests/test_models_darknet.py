"""Darknet family: cfg parser, network, .weights I/O, decode and the pruned-cfg writer."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yolo_prune.models import load
from yolo_prune.models.checkpoint import checkpoint_dict, from_checkpoint
from yolo_prune.models.darknet import (ConvLayer, MaxPoolLayer, build_darknet, load_darknet, parse_cfg,
                                       read_weights, weights_float_count, write_cfg, write_weights)
from yolo_prune.models.spec import apply_layers, record_layers

OUR_CFG = Path(__file__).resolve().parents[1] / "cfg" / "yolov4-tiny.cfg"
V4TINY_PARAMS = 6_056_606
V4TINY_FLOATS = 6_062_814
V4TINY_BYTES = 24_251_276

# A small network touching every supported layer kind and activation. Layer indices in the comments.
TINY_CFG = """[net]
width=64
height=64
channels=3

# L0
[convolutional]
batch_normalize=1
filters={f0}
size=3
stride=2
pad=1
activation=leaky

# L1
[convolutional]
batch_normalize=1
filters={f1}
size=3
stride=2
pad=1
activation=mish

# L2: second half of L1
[route]
layers=-1
groups=2
group_id=1

# L3
[convolutional]
batch_normalize=1
filters={f3}
size=3
stride=1
pad=1
activation=swish

# L4: L3 + L2
[shortcut]
from=-2
activation=linear

# L5: L1 + L4
[route]
layers=1,-1

# L6
[maxpool]
size=2
stride=2

# L7: keeps the spatial size
[maxpool]
size=2
stride=1

# L8
[convolutional]
batch_normalize=1
filters={f8}
size=3
stride=1
pad=1
activation=relu

# L9
[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

# L10
[yolo]
mask=3,4,5
anchors=4,5, 8,9, 12,14, 20,22, 30,35, 50,60
classes=2
num=6
scale_x_y=1.05

# L11
[route]
layers=-3

# L12
[convolutional]
batch_normalize=1
filters={f12}
size=1
stride=1
pad=1
activation=logistic

# L13
[upsample]
stride=2

# L14
[route]
layers=-1,5

# L15
[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

# L16
[yolo]
mask=0,1,2
anchors=4,5, 8,9, 12,14, 20,22, 30,35, 50,60
classes=2
num=6
scale_x_y=1.05
"""
WIDE = dict(f0=8, f1=16, f3=8, f8=16, f12=8)
NARROW = dict(f0=6, f1=12, f3=6, f8=10, f12=5)


def tiny(**widths):
    return build_darknet(TINY_CFG.format(**{**WIDE, **widths}), source="tiny.cfg")


def randomize(det, seed):
    """Random values everywhere (BN statistics included) so that any misplaced float changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(det.named_parameters()) + list(det.named_buffers()):
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) - 0.5)
    return det


def outputs(det, x):
    det.eval()
    with torch.no_grad():
        decoded = det(x)
        raw = det.model(x)
    return decoded, raw


def assert_same_outputs(a, b, x):
    (da, ra), (db, rb) = outputs(a, x), outputs(b, x)
    assert torch.equal(da, db)
    assert len(ra) == len(rb) and all(torch.equal(p, q) for p, q in zip(ra, rb))


# ---- architecture facts ----------------------------------------------------------------------------------------

def test_reference_cfg_layer_param_and_weights_size(shared, tmp_path):
    det = load_darknet(shared / "reference" / "yolov4-tiny.cfg")
    assert len(det.model.layers) == 38
    assert sum(p.numel() for p in det.parameters()) == V4TINY_PARAMS
    assert weights_float_count(det) == V4TINY_FLOATS
    path = write_weights(randomize(det, 1), tmp_path / "ref.weights")
    assert path.stat().st_size == V4TINY_BYTES


def test_our_cfg_builds_yolov4_tiny():
    det = load_darknet(OUR_CFG)
    assert len(det.model.layers) == 38
    assert sum(p.numel() for p in det.parameters()) == V4TINY_PARAMS
    assert weights_float_count(det) == V4TINY_FLOATS
    assert (det.family, det.head_type, det.nc, det.strides) == ("darknet", "darknet", 80, (32, 16))
    assert det.anchors.tolist() == [[[81, 82], [135, 169], [344, 319]], [[23, 27], [37, 58], [81, 82]]]
    assert det.scale_x_y == [1.05, 1.05]
    assert det.head_modules() == ["model.layers.29.conv", "model.layers.36.conv"]
    assert det.names[0] == "class0" and det.names[79] == "class79"
    assert det.spec["family"] == "darknet" and det.spec["base"] == OUR_CFG.read_text()
    assert det.model.layers[3].groups == 2 and det.model.layers[3].group_id == 1


def test_our_cfg_matches_reference_network(shared):
    ours, ref = load_darknet(OUR_CFG), load_darknet(shared / "reference" / "yolov4-tiny.cfg")
    assert record_layers(ours) == record_layers(ref)
    assert [repr(m) for m in ours.model.layers] == [repr(m) for m in ref.model.layers]
    assert torch.equal(ours.anchors, ref.anchors) and ours.strides == ref.strides


# ---- .weights I/O -------------------------------------------------------------------------------------------

def test_weights_roundtrip_is_bit_exact(tmp_path):
    src = randomize(load_darknet(OUR_CFG), 1)
    dst = randomize(load_darknet(OUR_CFG), 2)
    path = write_weights(src, tmp_path / "v4tiny.weights", seen=12345)
    header = read_weights(dst, path)
    assert header == {"major": 0, "minor": 2, "revision": 0, "seen": 12345}
    x = torch.rand(2, 3, 64, 96)
    assert_same_outputs(src, dst, x)
    # the same through the public entry point, .cfg found beside the .weights
    (tmp_path / "v4tiny.cfg").write_text(OUR_CFG.read_text())
    assert_same_outputs(src, load(tmp_path / "v4tiny.weights"), x)


def test_old_header_with_int32_seen_is_read(tmp_path):
    src = randomize(tiny(), 3)
    floats = torch.cat([t.detach().flatten() for t in _darknet_order(src)]).numpy().astype("<f4")
    path = tmp_path / "old.weights"
    path.write_bytes(np.array([0, 1, 0, 77], "<i4").tobytes() + floats.tobytes())  # v0.1: 16-byte header
    dst = randomize(tiny(), 4)
    assert read_weights(dst, path)["seen"] == 77
    assert_same_outputs(src, dst, torch.rand(1, 3, 64, 64))


def _darknet_order(det):
    for layer in det.model.layers:
        if isinstance(layer, ConvLayer):
            if layer.bn is not None:
                yield from (layer.bn.bias, layer.bn.weight, layer.bn.running_mean, layer.bn.running_var)
            else:
                yield layer.conv.bias
            yield layer.conv.weight


def test_wrong_size_weights_reports_expected_and_found(tmp_path):
    det = load_darknet(OUR_CFG)
    path = write_weights(det, tmp_path / "short.weights")
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match=re.escape("expected 6,062,814 floats (24,251,276 bytes")) as e:
        read_weights(det, path)
    assert "found 6,062,813 floats (24,251,272 bytes)" in str(e.value) and "short.weights" in str(e.value)
    path.write_bytes(path.read_bytes() + b"\0" * 6)
    with pytest.raises(ValueError, match=re.escape("found 6,062,814 floats + 2 bytes")):
        read_weights(det, path)


def test_wrong_size_leaves_model_untouched(tmp_path):
    det = randomize(tiny(), 5)
    before = {k: v.clone() for k, v in det.state_dict().items()}
    path = tmp_path / "other.weights"
    write_weights(tiny(f8=12), path)
    with pytest.raises(ValueError, match="expected"):
        read_weights(det, path)
    assert all(torch.equal(before[k], v) for k, v in det.state_dict().items())


# ---- bad input ----------------------------------------------------------------------------------------------

def test_unknown_section_names_the_line(tmp_path):
    lines = OUR_CFG.read_text().splitlines()
    header_at = next(i for i, ln in enumerate(lines) if ln.strip() == "[convolutional]")
    lines.insert(header_at, "[foo]")
    path = tmp_path / "bad.cfg"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=re.escape(f"bad.cfg:{header_at + 1}: unknown section [foo]")):
        load_darknet(path)


@pytest.mark.parametrize("old, bad, message", [
    ("filters=8", "filters=abc", "field 'filters': expected an integer, found 'abc'"),
    ("activation=leaky", "activation=gelu", "field 'activation': expected one of leaky"),
    ("pad=1", "dilation=2", "field 'dilation=2' is not supported"),
])
def test_bad_option_names_the_line(old, bad, message):
    text = TINY_CFG.format(**WIDE).replace(old, bad, 1)
    line = text.splitlines().index(bad) + 1
    with pytest.raises(ValueError, match=re.escape(f"tiny.cfg:{line}: ") + ".*" + re.escape(message)):
        build_darknet(text, source="tiny.cfg")


def test_head_filters_mismatch_says_what_is_needed():
    text = TINY_CFG.format(**WIDE).replace("filters=21", "filters=20", 1)
    with pytest.raises(ValueError, match=r"needs 21 input channels \(filters=21 .*found 20"):
        build_darknet(text, source="tiny.cfg")


def test_missing_files_say_what_to_supply(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.cfg: darknet cfg not found\. Supply the network's \.cfg"):
        load_darknet(tmp_path / "nope.cfg")
    with pytest.raises(FileNotFoundError, match=r"nope\.weights: darknet \.weights file not found\. Supply"):
        load_darknet(OUR_CFG, weights=tmp_path / "nope.weights")
    (tmp_path / "lonely.weights").write_bytes(b"\0" * 20)
    with pytest.raises(FileNotFoundError, match=r"lonely\.cfg: .*needs its \.cfg of the same name beside it"):
        load(tmp_path / "lonely.weights")


# ---- layer semantics --------------------------------------------------------------------------------------

def test_maxpool_size2_stride1_keeps_size_and_pads_bottom_right():
    pool = MaxPoolLayer(2, 1, 1)
    x = torch.randn(1, 2, 5, 7)
    y = pool(x)
    assert y.shape == x.shape
    for i in range(5):
        for j in range(7):  # darknet: the window starts at (i, j); cells past the edge are ignored
            assert torch.equal(y[0, :, i, j], x[0, :, i:i + 2, j:j + 2].amax(dim=(1, 2)))
    # inside the cfg network: layer 7 keeps 8x8, layer 6 halves (with darknet's rounding up for odd sizes)
    det = tiny().eval()
    shapes = {}
    for i in (6, 7):
        det.model.layers[i].register_forward_hook(lambda m, a, o, i=i: shapes.__setitem__(i, (a[0].shape, o.shape)))
    det(torch.rand(1, 3, 64, 64))
    assert shapes[7][0] == shapes[7][1] and shapes[7][1][-2:] == (8, 8)
    assert MaxPoolLayer(2, 2, 1)(torch.rand(1, 1, 13, 13)).shape[-2:] == (7, 7)


def test_route_groups_gives_second_half():
    det = randomize(tiny(), 6).eval()
    seen = {}
    for i in (1, 2):
        det.model.layers[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o))
    det(torch.rand(1, 3, 64, 64))
    assert seen[2].shape[1] == 8 and torch.equal(seen[2], seen[1][:, 8:])


def test_shortcut_and_concat_route():
    det = randomize(tiny(), 7).eval()
    seen = {}
    for i in (1, 2, 3, 4, 5):
        det.model.layers[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o))
    det(torch.rand(1, 3, 64, 64))
    assert torch.equal(seen[4], seen[3] + seen[2])
    assert torch.equal(seen[5], torch.cat([seen[1], seen[4]], 1))


def test_forward_shapes_train_and_eval():
    det = tiny()
    assert det.strides == (8, 4) and det.nc == 2
    x = torch.rand(2, 3, 64, 96)
    det.train()
    raw = det(x)
    assert [tuple(p.shape) for p in raw] == [(2, 3, 8, 12, 7), (2, 3, 16, 24, 7)]
    raw[0].sum().backward()
    assert det.model.layers[0].conv.weight.grad is not None
    det.eval()
    with torch.no_grad():
        out = det(x)
        assert torch.equal(out, det.decode(det.model(x)))
    assert out.shape == (2, 3 * (8 * 12 + 16 * 24), 6)


def test_decode_with_scale_x_y():
    det = tiny()
    raw = [torch.zeros(1, 3, 8, 8, 7), torch.zeros(1, 3, 16, 16, 7)]
    a, gy, gx = 1, 2, 3  # level 0 (stride 8), anchor mask 4 -> (30, 35)
    raw[0][0, a, gy, gx] = torch.tensor([2.0, -1.0, math.log(2), math.log(0.5), 3.0, 0.0, 1.0])
    out = det.decode(raw)
    box = out[0, a * 64 + gy * 8 + gx]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    s = 1.05
    expected = [(sig(2.0) * s - 0.5 * (s - 1) + gx) * 8, (sig(-1.0) * s - 0.5 * (s - 1) + gy) * 8, 60.0, 17.5,
                sig(3.0) * 0.5, sig(3.0) * sig(1.0)]
    assert torch.allclose(box, torch.tensor(expected), rtol=1e-6, atol=1e-5)
    # a zero cell at level 1 (stride 4, anchor (4, 5)), cell (5, 7): centre, anchor size, 0.25 scores
    assert torch.allclose(out[0, 3 * 64 + 5 * 16 + 7], torch.tensor([7.5 * 4, 5.5 * 4, 4, 5, 0.25, 0.25]))


# ---- classes override ----------------------------------------------------------------------------------------

def test_nc_override_resizes_heads_and_keeps_backbone_weights(tmp_path):
    src = randomize(tiny(), 8)
    write_weights(src, tmp_path / "tiny.weights")
    (tmp_path / "tiny.cfg").write_text(TINY_CFG.format(**WIDE))
    det = load_darknet(tmp_path / "tiny.cfg", weights=tmp_path / "tiny.weights", nc=1)
    assert det.nc == 1 and det.names == {0: "class0"} and det.spec["nc"] == 1
    assert [det.get_submodule(n).out_channels for n in det.head_modules()] == [18, 18]
    assert torch.equal(det.model.layers[8].conv.weight, src.model.layers[8].conv.weight)
    assert torch.equal(det.model.layers[12].bn.running_var, src.model.layers[12].bn.running_var)
    assert det.eval()(torch.rand(1, 3, 64, 64)).shape[-1] == 5
    named = build_darknet(OUR_CFG.read_text(), names=["cat", "dog", "bird"])
    assert named.nc == 3 and named.names[2] == "bird" and named.model.layers[29].conv.out_channels == 24


# ---- pruned widths: write_cfg + write_weights, checkpoints ------------------------------------------------------

def shrunk_tiny(seed):
    """The tiny net with its convs narrowed by hand, consistently (route-group halves equal, shortcut matched)."""
    det = tiny()
    apply_layers(det, record_layers(tiny(**NARROW)))
    return randomize(det, seed)


def test_write_cfg_of_shrunk_model_reloads_identically(tmp_path):
    det = shrunk_tiny(9)
    cfg_path = write_cfg(det, tmp_path / "pruned.cfg")
    write_weights(det, tmp_path / "pruned.weights")
    text = cfg_path.read_text()
    assert parse_cfg(text)[1].raw("filters") == "6" and parse_cfg(text)[9].raw("filters") == "10"
    assert "# L8" in text  # comments survive
    again = load(tmp_path / "pruned.cfg", weights=tmp_path / "pruned.weights")
    assert record_layers(again) == record_layers(det)
    assert_same_outputs(det, again, torch.rand(1, 3, 64, 96))


def test_write_cfg_refuses_inconsistent_widths(tmp_path):
    det = tiny()
    apply_layers(det, {"model.layers.8.conv": {"type": "Conv2d", "in": 24, "out": 10, "groups": 1},
                       "model.layers.8.bn": {"type": "BatchNorm2d", "num_features": 10}})
    with pytest.raises(ValueError, match=r"layer 'model\.layers\.9\.conv'"):
        write_cfg(det, tmp_path / "bad.cfg")
    assert not (tmp_path / "bad.cfg").exists()


def test_checkpoint_of_shrunk_model_rebuilds_from_spec():
    det = shrunk_tiny(10)
    again = from_checkpoint(checkpoint_dict(det), source="test")
    assert again.family == "darknet" and again.names == det.names
    assert_same_outputs(det, again, torch.rand(1, 3, 64, 64))


def test_pruned_by_engine_reloads_from_cfg_and_weights(tmp_path):
    try:
        from yolo_prune.prune import prune_model
    except ImportError as e:
        pytest.skip(f"pruning engine not available: {e}")
    det = randomize(tiny(f1=32, f3=16, f8=32), 11)
    report = prune_model(det, ratio=0.5, imgsz=64, trace_size=64, round_to=2)
    widths = record_layers(det)
    assert widths["model.layers.8.conv"]["out"] < 32
    # the conv feeding the grouped route loses channels in both halves alike; the shortcut partner follows
    half = widths["model.layers.1.conv"]["out"] // 2
    assert half * 2 == widths["model.layers.1.conv"]["out"] < 32 and widths["model.layers.3.conv"]["out"] == half
    assert report["params_after"] < report["params_before"]
    write_cfg(det, tmp_path / "pruned.cfg")
    write_weights(det, tmp_path / "pruned.weights")
    again = load_darknet(tmp_path / "pruned.cfg", weights=tmp_path / "pruned.weights")
    assert record_layers(again) == widths
    assert_same_outputs(det, again, torch.rand(1, 3, 64, 64))
