"""The pruning engine: exactness, widths, checkpoints, selection and bad input."""
import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from yolo_prune.graph import trace
from yolo_prune.models import load
from yolo_prune.models.spec import CompensatedConv2d
from yolo_prune.prune import PlanError, prune_iteratively, prune_model, prune_unstructured
from yolo_prune.prune.exactness import constant_channel_check, make_channels_constant
from yolo_prune.prune.run import prune_checkpoint

ROOT = Path(__file__).resolve().parents[1]
YOLO_MODELS = ["yolov8n.yaml", "yolo11n.yaml", "yolov5n.pt", "cfg/yolov4-tiny.cfg"]
TV_MODELS = ["resnet18", "mobilenet_v3_small", "densenet121", "efficientnet_b0", "regnet_x_400mf"]


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.rand(m.num_features, generator=g) - 0.5
            m.running_mean.copy_((torch.rand(m.num_features, generator=g) - 0.5) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _build(name, request):
    if name == "yolov5n.pt":
        return load(request.getfixturevalue("yolov5n_pt"))
    if name in TV_MODELS:
        return getattr(torchvision.models, name)(num_classes=10).eval()
    return load(ROOT / name if name.endswith(".cfg") else name)


def _prune_constant_channels(name, request, compensate, zero_beta):
    torch.manual_seed(0)
    model = _build(name, request)
    if name != "yolov5n.pt":
        _randomize_bn(model)
    rep = constant_channel_check(model, compensate, zero_beta)  # compared at 64x96, not the trace size
    return rep["max_rel_diff"], rep


@pytest.mark.parametrize("name", YOLO_MODELS + TV_MODELS)
def test_pruning_constant_channels_is_exact(name, request):
    err, rep = _prune_constant_channels(name, request, "exact", zero_beta=False)
    assert rep["removed_channels"] > 0 and rep["macs_ratio"] < 1
    assert err < 1e-4, f"{name}: exact compensation changed the output by {err:.2e} (relative)"


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolov5n.pt", "mobilenet_v3_small"])
def test_zero_beta_without_compensation_is_exact_and_check_can_fail(name, request):
    err, _ = _prune_constant_channels(name, request, "off", zero_beta=True)
    assert err < 1e-4
    # β kept but not compensated: the check must see the difference
    err_off, _ = _prune_constant_channels(name, request, "off", zero_beta=False)
    assert err_off > 1e-3, f"{name}: dropping act(β) went unnoticed ({err_off:.2e})"
    if name.startswith("yolo"):  # bias folding is exact but for zero-padded borders: far better than nothing
        err_bias, _ = _prune_constant_channels(name, request, "bias", zero_beta=False)
        assert err_bias < err_off / 2


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolov5n.pt"])
def test_ratio_half_saves_macs_and_reloads_bit_identically(name, request, tmp_path):
    weights = request.getfixturevalue("yolov5n_pt") if name == "yolov5n.pt" else name
    out = tmp_path / "p.pt"
    rep = prune_checkpoint(weights, out, ratio=0.5, imgsz=320)
    assert rep["macs_after"] <= 0.6 * rep["macs_before"]
    meta = json.loads(out.with_suffix(".json").read_text())
    for key in ("macs_before", "macs_after", "params_before", "params_after", "widths_before", "widths_after",
                "verification"):
        assert key in meta
    assert all(w[1] % 8 == 0 for k, w in meta["widths_after"].items() if meta["widths_before"][k][1] % 8 == 0
               and k.endswith("conv") and meta["widths_after"][k][1] != meta["widths_before"][k][1])
    a = load(out)
    code = ("import torch,sys; from yolo_prune.models import load; m=load(sys.argv[1]); "
            "x=torch.rand(1,3,96,160,generator=torch.Generator().manual_seed(0)); "
            "torch.save({'y': m(x).detach(), 'state': m.state_dict()}, sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "y.pt")], check=True, cwd=ROOT)
    fresh = torch.load(tmp_path / "y.pt")
    state = a.state_dict()
    assert list(fresh["state"]) == list(state)  # fresh process: the same layers, bit-identical weights
    assert all(torch.equal(fresh["state"][k], v) for k, v in state.items())
    x = torch.rand(1, 3, 96, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # same weights, same input; oneDNN may pick other kernels in a process that ran other shapes (last-bit
        # differences), so the outputs are compared at float32 rounding level
        torch.testing.assert_close(a(x), fresh["y"], rtol=1e-5, atol=1e-6)
        for hw in ((64, 64), (128, 96)):  # runs at other sizes, every width consistent
            assert a(torch.rand(1, 3, *hw)).shape[0] == 1


def test_widths_match_traced_shapes_and_chunks_stay_even():
    det = load("yolov8n.yaml")
    prune_model(det, 0.4, imgsz=64, verify=False)
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen.__setitem__(n, inp[0].shape[1]))
             for n, m in det.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        det(torch.rand(1, 3, 96, 96))
    for h in hooks:
        h.remove()
    convs = {n: m for n, m in det.named_modules() if isinstance(m, nn.Conv2d)}
    assert seen and all(seen[n] == convs[n].in_channels for n in seen)
    for n, m in det.named_modules():
        if type(m).__name__ == "C2f":
            assert m.cv1.conv.out_channels % 2 == 0 and m.c == m.cv1.conv.out_channels // 2


def test_group_printing_shows_couplings():
    graph = trace(load("yolov8n.yaml"), imgsz=64)
    text = str(graph.groups[2])
    assert "triggered by pruning" in text and "=> prune" in text
    assert any("positions per channel" in str(g) for g in graph.groups)  # C2f chunk / SPPF concat copies


def test_head_outputs_and_input_are_never_pruned():
    det = load("yolov8n.yaml")
    graph = trace(det, imgsz=64)
    pruned = {s.module for g in graph.groups for ch in g.channels for s in ch if s.role == "out"}
    assert not pruned & set(det.head_modules())
    first = "model.model.0.conv"
    assert not any(s.module == first and s.role == "in" for g in graph.groups for ch in g.channels for s in ch)


def test_stripped_checkpoint_without_requires_grad_prunes():
    det = load("yolov8n.yaml")
    for p in det.parameters():
        p.requires_grad_(False)
    rep = prune_model(det, 0.3, imgsz=64)
    assert rep["macs_after"] < rep["macs_before"]
    assert all(not p.requires_grad for p in det.parameters())


def test_criteria_all_produce_valid_models():
    base = load("yolov8n.yaml")
    for crit in ("bn", "l1", "l2", "fpgm", "random"):
        det = copy.deepcopy(base)
        rep = prune_model(det, 0.3, criterion=crit, imgsz=64)
        assert rep["removed_channels"] > 0, crit
        det(torch.rand(1, 3, 64, 64))


def test_local_ratio_and_threshold_and_target_macs():
    base = load("yolov8n.yaml")
    det = copy.deepcopy(base)
    rep = prune_model(det, 0.5, local=True, imgsz=64, round_to=1, min_keep=0.0)
    assert abs(rep["removed_channels"] / rep["prunable_channels"] - 0.5) < 0.05
    det = copy.deepcopy(base)
    rep = prune_model(det, target_macs=0.5, imgsz=64)
    assert rep["macs_after"] <= 0.5 * rep["macs_before"] * 1.02
    det = copy.deepcopy(base)
    bn = det.model.model[0].bn
    bn.weight.data[:8] = 1e-4
    rep = prune_model(det, threshold=1e-3, round_to=1, min_keep=0.0, imgsz=64)
    assert rep["removed_channels"] == 8


def test_round_to_and_floor_keep_widths_sane():
    det = load("yolov8n.yaml")
    before = {n: m.out_channels for n, m in det.named_modules() if isinstance(m, nn.Conv2d)}
    prune_model(det, 0.6, imgsz=64, round_to=8)
    for n, m in det.named_modules():
        if isinstance(m, nn.Conv2d) and m.out_channels != before[n]:
            assert m.out_channels >= 8 and m.out_channels >= 0.1 * before[n]


def test_config_overrides_and_ignore(tmp_path):
    det = load("yolov8n.yaml")
    cfg = tmp_path / "prune.yaml"
    cfg.write_text("layers:\n  'model.model.2.*': exclude\n  'model.model.4.*': 0.2\n")
    out = tmp_path / "p.pt"
    prune_checkpoint("yolov8n.yaml", out, ratio=0.5, config=cfg, ignore=["model.model.0.conv"], imgsz=64)
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["widths_after"]["model.model.0.conv"] == rep["widths_before"]["model.model.0.conv"]
    assert rep["widths_after"]["model.model.2.m.0.cv1.conv"] == rep["widths_before"]["model.model.2.m.0.cv1.conv"]
    del det


def test_iterative_pruning_reaches_target():
    det = load("yolov8n.yaml")
    total = sum(g.width for g in trace(det, imgsz=64).groups)
    calls = []
    reps = prune_iteratively(det, 0.4, steps=3, between_steps=lambda m, s, r: calls.append(s), imgsz=64,
                             round_to=1, min_keep=0.0, verify=False)
    removed = sum(r["removed_channels"] for r in reps)
    assert calls == [1, 2, 3] and abs(removed / total - 0.4) < 0.03


def test_unstructured_mode_keeps_shapes():
    det = load("yolov8n.yaml")
    macs = sum(p.numel() for p in det.parameters())
    rep = prune_unstructured(det, 0.3)
    assert abs(rep["global_sparsity"] - 0.3) < 0.01
    assert sum(p.numel() for p in det.parameters()) == macs


def test_layers_that_never_ran_are_reported():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
            self.unused = nn.Conv2d(16, 16, 1)
            self.c = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return self.c(torch.relu(self.b(self.a(x))))
    graph = trace(Net(), imgsz=32)
    assert graph.not_run == ["unused"]
    assert len(graph.groups) == 1 and graph.groups[0].width == 16


@pytest.mark.parametrize("kwargs,match", [
    ({"ratio": 1.0}, "ratio"), ({"ratio": -0.1}, "ratio"), ({"target_macs": 0.01}, "unreachable"),
    ({"ratio": 0.5, "ignore": ["model.model.99.cv1"]}, "no layer named"),
])
def test_bad_input_clear_error_and_no_file(tmp_path, kwargs, match):
    out = tmp_path / "p.pt"
    with pytest.raises(PlanError, match=match):
        prune_checkpoint("yolov8n.yaml", out, imgsz=64, **kwargs)
    assert not list(tmp_path.iterdir())


def test_unknown_ignore_name_lists_near_matches():
    with pytest.raises(PlanError, match="did you mean: .*model.model.2.cv1"):
        prune_model(load("yolov8n.yaml"), 0.5, ignore=["model.model.2.cv"], imgsz=64)


def test_model_without_prunable_group():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            return self.conv(x)
    with pytest.raises(PlanError, match="no prunable channel group"):
        prune_model(Head(), 0.5, imgsz=32)


def test_exact_mode_checkpoint_round_trip(tmp_path):
    det = load("yolov8n.yaml")
    _randomize_bn(det)
    make_channels_constant(det)
    out = tmp_path / "e.pt"
    from yolo_prune.models.checkpoint import save
    prune_model(det, threshold=1e-12, round_to=1, min_keep=0.0, compensate="exact", imgsz=64, verify=False)
    assert any(isinstance(m, CompensatedConv2d) for m in det.modules())
    save(det, out)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(det(x), load(out)(x))
    from yolo_prune.eval.infer import fuse_conv_bn
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fused copy must agree with the model, not fall back to a plain copy
        fused = fuse_conv_bn(det, x)
    assert any(isinstance(m, CompensatedConv2d) for m in fused.modules())
    # a compensated model traces again (fine-tuning, a second cut): the border term follows its conv's outputs
    compensated = {n for n, m in det.named_modules() if isinstance(m, CompensatedConv2d)}
    prunable_out = {m for g in trace(det, imgsz=64).groups for m, role, _ in g.signature if role == "out"}
    assert compensated & prunable_out
    rep = prune_model(det, ratio=0.2, imgsz=64)
    assert rep["verification"]["max_rel_diff"] < 1.0 and any(
        rep["widths_after"][n][1] < rep["widths_before"][n][1] for n in compensated)


def test_prune_tool_cli(tmp_path):
    out = tmp_path / "v8.pt"
    r = subprocess.run([sys.executable, "tools/prune.py", "--weights", "yolov8n.yaml", "--ratio", "0.5",
                        "--imgsz", "128", "--show-groups", "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "Group 0:" in r.stdout and "MACs" in r.stdout and "verification" in r.stdout
    assert out.is_file() and out.with_suffix(".json").is_file() and out.with_suffix(".ultralytics.pt").is_file()
    r = subprocess.run([sys.executable, "tools/prune.py", "--weights", "yolov8n.yaml", "--ratio", "1.5",
                        "--out", str(tmp_path / "bad.pt")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "ratio" in r.stderr and not (tmp_path / "bad.pt").exists()
