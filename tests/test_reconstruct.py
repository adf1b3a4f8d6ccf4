"""Least-squares reconstruction (compensate=reconstruct) and the recon criterion: exactness where the removed
channels are linear in the kept ones, error reduction in general, couplings, the head, and checkpoints."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from yolo_prune.graph import trace
from yolo_prune.models import load
from yolo_prune.prune import PlanError, prune_model
from yolo_prune.prune.plan import PruningPlan
from yolo_prune.prune.reconstruct import calibration_batch, reconstruct, restandardize_bn
from yolo_prune.prune.run import prune_checkpoint
from yolo_prune.prune.surgery import apply_plan

ROOT = Path(__file__).resolve().parents[1]


def _randomize_bn(model):
    """A fresh model's BN (γ = 1, mean 0, var 1) shrinks activations to ~1e-9 by the head: give it trained-like
    statistics so errors are measured on a meaningful signal."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.rand(m.num_features, generator=g) - 0.5
            m.running_mean.copy_((torch.rand(m.num_features, generator=g) - 0.5) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.05 + 0.01)
    return model


def _images(n=8, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class _Linear(nn.Module):
    """Producer conv (no activation) -> consumer conv (k×k) -> ReLU -> head conv."""

    def __init__(self, k: int):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 6, k, padding=k // 2)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.b(self.a(x))))

    def head_modules(self):
        return ["head"]


def _make_dependent(net: _Linear, const: float) -> None:
    """Channels 6 and 7 of ``a`` become linear combinations of channels 0-5 plus a constant."""
    w, b = net.a.weight.data, net.a.bias.data
    w[6], b[6] = 0.5 * w[0] - w[1], 0.5 * b[0] - b[1] + const
    w[7], b[7] = w[2] + 0.25 * w[5], b[2] + 0.25 * b[5] - const


@pytest.mark.parametrize("k,const", [(1, 0.3), (3, 0.0)])
def test_refit_is_exact_when_removed_channels_are_linear_in_kept_ones(k, const):
    torch.manual_seed(0)
    net = _Linear(k).eval()
    _make_dependent(net, const)
    ref = copy.deepcopy(net)
    graph = trace(net, imgsz=32)
    gid = next(g.gid for g in graph.groups if any(s.module == "a" and s.role == "out" for s in g.channels[0]))
    plan = PruningPlan(remove={gid: [6, 7]})
    calib = _images(8, 32)
    x = _images(2, 48, seed=1)
    with torch.no_grad():
        want = ref(x)
        cut = copy.deepcopy(net)
        apply_plan(cut, trace(cut, imgsz=32), plan)
        plain_err = (cut(x) - want).abs().max() / want.abs().max()
        apply_plan(net, graph, plan)
        rep = reconstruct(net, ref, graph, plan, calib, alpha=1e-9, progress=False)
        got = net(x)
    assert net.b.in_channels == 6 and "b" in rep["layers"]
    err = ((got - want).abs().max() / want.abs().max()).item()
    assert err < 1e-4, f"k={k}: refit left a relative error of {err:.2e} (dropping alone: {plain_err:.2e})"
    assert plain_err > 1e-2  # the cut alone is far from exact: the test can fail


def test_refit_reduces_each_layers_error_and_the_output_error():
    base = _randomize_bn(load("yolov5nu.yaml")).eval()
    calib = _images(8, 64)
    x = _images(2, 64, seed=3)
    with torch.no_grad():
        want = base(x)[0]
    errs = {}
    for comp in ("bias", "reconstruct"):
        det = copy.deepcopy(base)
        rep = prune_model(det, 0.3, criterion="l2", compensate=comp, calib=calib, imgsz=64, verify=False,
                          progress=False)
        with torch.no_grad():
            errs[comp] = float((det(x)[0] - want).abs().mean())
        if comp == "reconstruct":
            rec = rep["reconstruction"]
            assert rec["refit_layers"] > 10 and not rec["fallback_layers"]
            for name, st in rec["per_layer"].items():
                assert st["rel_err_after"] <= st["rel_err_before"] + 1e-6, name
            assert rec["rel_err_after_mean"] < 0.7 * rec["rel_err_before_mean"]
    assert errs["reconstruct"] < 0.7 * errs["bias"], errs


def test_restandardized_bn_keeps_its_function_and_agrees_in_train_mode():
    """After a refit the BN gets the refit output's own statistics: eval output unchanged, and a train-mode batch
    of the calibration data (what fine-tuning and recalibration see) now gives the eval output too."""
    g = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(6).eval()
    bn.weight.data, bn.bias.data = torch.rand(6, generator=g) + 0.5, torch.randn(6, generator=g)
    bn.running_mean.copy_(torch.randn(6, generator=g))
    bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
    z = torch.randn(16, 6, 8, 8, generator=g) * 0.3 + 2.0  # a refit output: other mean, smaller variance
    with torch.no_grad():
        want = bn(z)
        gap_before = (copy.deepcopy(bn).train()(z) - want).abs().max()
        assert restandardize_bn(bn, z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False))
        assert torch.allclose(bn(z), want, atol=1e-5)
        assert torch.allclose(bn.train()(z), want, atol=1e-4)
    assert gap_before > 0.1  # without it train mode differs: the test can fail
    assert not restandardize_bn(nn.BatchNorm2d(6, affine=False), torch.zeros(6), torch.ones(6))


def test_reconstruct_restandardizes_the_bns_of_refit_layers():
    """Each refit conv's BN ends with the running statistics of that conv's actual output on the calibration
    images (so train-mode BN and recalibration agree with the refit), without changing the model's output."""
    base = _randomize_bn(load("yolov5nu.yaml")).eval()
    calib = _images(8, 64)
    det = copy.deepcopy(base)
    rep = prune_model(det, 0.3, criterion="l2", compensate="reconstruct", calib=calib, imgsz=64, verify=False,
                      progress=False)
    rec = rep["reconstruction"]
    with_bn = sorted(n for n in rec["per_layer"] if n.endswith(".conv"))  # Conv blocks: conv -> bn -> act
    assert rec["bn_restandardized"] == len(with_bn) > 10
    name = with_bn[len(with_bn) // 2]
    conv, bn = det.get_submodule(name), det.get_submodule(name.rsplit(".", 1)[0] + ".bn")
    seen = {}
    h = conv.register_forward_hook(lambda m, i, o: seen.setdefault("z", o))
    with torch.no_grad():
        det.eval()(calib)
    h.remove()
    z = seen["z"].double()
    for got, want in ((bn.running_mean, z.mean((0, 2, 3))), (bn.running_var, z.var((0, 2, 3), unbiased=False))):
        assert (got.double() - want).abs().max() <= 1e-4 * want.abs().max(), name


@pytest.mark.parametrize("name", ["yolov5nu.yaml", "yolov8n.yaml",
                                  pytest.param("cfg/yolov4-tiny.cfg", marks=pytest.mark.slow)])
def test_couplings_and_head_are_refit(name):
    """concat/split/add (C3, C2f) and darknet routes with groups: the consumers behind them and the head convs
    are refit, widths stay consistent and the model runs at other sizes."""
    det = load(ROOT / name if name.endswith(".cfg") else name).eval()
    heads = set(det.head_modules())
    rep = prune_model(det, 0.4, criterion="recon", compensate="reconstruct", calib=_images(4, 64), imgsz=64,
                      progress=False)
    rec = rep["reconstruction"]
    fitted = set(rec["per_layer"])
    assert rec["refit_layers"] > 5 and not rec["fallback_layers"]
    assert fitted & heads or any(h.rsplit(".", 1)[0] in f for h in heads for f in fitted), \
        f"no head conv refit: {sorted(fitted)[-5:]}"
    with torch.no_grad():
        for hw in ((64, 96), (96, 64)):
            det(torch.rand(1, 3, *hw))


def test_recon_criterion_prefers_redundant_channels():
    """Channels that are linear combinations of others cost nothing after the refit: recon removes two of them
    (which two of the dependent ones is a tie) and the refit is then exact; l2 removes others and is not."""
    errs = {}
    for crit in ("recon", "l2"):
        torch.manual_seed(0)
        net = _Linear(1).eval()
        _make_dependent(net, 0.3)
        rep = prune_model(net, 0.25, criterion=crit, local=True, overrides=[("head", None)],
                          compensate="reconstruct", calib=_images(8, 32), round_to=1, trace_size=32, imgsz=32,
                          recon_alpha=1e-9, progress=False)
        assert net.a.out_channels == 6 and net.b.out_channels == 6
        errs[crit] = rep["verification"]["max_rel_diff"]
    assert errs["recon"] < 1e-4 < 1e-2 < errs["l2"], errs


def test_reconstructed_checkpoint_reloads_bit_identically(tmp_path, shared):
    """Calibration from a data yaml (train split, no labels read) and from a folder; the written model reloads
    with bitwise equal weights in a fresh process, and the ultralytics copy is written."""
    imgs = shared / "coco128" / "images" / "train2017"
    assert calibration_batch(shared / "coco128" / "data.yaml", 4, 64).shape == (4, 3, 64, 64)
    out = tmp_path / "p.pt"
    rep = prune_checkpoint("yolov8n.yaml", out, ratio=0.3, compensate="reconstruct", calib=imgs, calib_images=4,
                           calib_imgsz=64, imgsz=64)
    assert rep["reconstruction"]["refit_layers"] > 5 and rep["ultralytics_pt"]
    a = load(out)
    code = ("import torch,sys; from yolo_prune.models import load; "
            "torch.save(load(sys.argv[1]).state_dict(), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "s.pt")], check=True, cwd=ROOT)
    fresh = torch.load(tmp_path / "s.pt")
    state = a.state_dict()
    assert list(fresh) == list(state) and all(torch.equal(fresh[k], v) for k, v in state.items())


def _image_folder(folder: Path, n: int, shape=(50, 70, 3), suffix=".png") -> Path:
    """``n`` random photos-to-be (no labels) in ``folder``."""
    import cv2
    import numpy as np
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}{suffix}"), rng.integers(0, 255, shape, dtype=np.uint8))
    return folder


def test_darknet_reconstruct_writes_native_files(tmp_path):
    src = _image_folder(tmp_path / "imgs", 3)
    out = tmp_path / "d.pt"
    rep = prune_checkpoint(ROOT / "cfg/yolov4-tiny.cfg", out, ratio=0.3, compensate="reconstruct", calib=src,
                           calib_imgsz=64, imgsz=64)
    assert len(rep["darknet"]) == 2 and all(Path(p).is_file() for p in rep["darknet"])
    again = load(out.with_suffix(".cfg"), weights=out.with_suffix(".weights"))  # native pair matches the .pt
    x = _images(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x)[0], load(out).eval()(x)[0], rtol=1e-4, atol=1e-5)


def test_reconstruct_needs_calibration_and_clear_errors(tmp_path):
    with pytest.raises(PlanError, match="--calib"):
        prune_model(load("yolov8n.yaml"), 0.3, compensate="reconstruct", imgsz=64)
    with pytest.raises(PlanError, match="--calib"):
        prune_model(load("yolov8n.yaml"), 0.3, criterion="recon", imgsz=64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        prune_checkpoint("yolov8n.yaml", tmp_path / "p.pt", ratio=0.3, compensate="reconstruct",
                         calib=tmp_path / "empty", imgsz=64)
    with pytest.raises(ValueError, match="calib-images"):
        prune_checkpoint("yolov8n.yaml", tmp_path / "p.pt", ratio=0.3, compensate="reconstruct",
                         calib=tmp_path / "empty", calib_images=0, imgsz=64)
    assert not (tmp_path / "p.pt").exists()


def test_fold_then_reconstruct_keeps_bias_free_convs_bias_free():
    """yolov5/ultralytics convs have no bias: the fitted bias lives in the BN's running mean, so the checkpoint
    layout (and the native formats) do not change."""
    det = load("yolov8n.yaml").eval()
    before = {n: m.bias is None for n, m in det.named_modules() if isinstance(m, nn.Conv2d)}
    prune_model(det, 0.3, compensate="reconstruct", calib=_images(4, 64), imgsz=64, progress=False)
    after = {n: m.bias is None for n, m in det.named_modules() if isinstance(m, nn.Conv2d)}
    assert before == after


@pytest.mark.slow
def test_label_free_distillation_closes_the_gap(tmp_path):
    """A pruned student distilled on unlabeled images gets closer to its teacher; no label file exists."""
    from yolo_prune.train.unlabeled import distill_unlabeled, student_teacher_gap
    teacher = _randomize_bn(load("yolov5nu.yaml")).eval()
    student = copy.deepcopy(teacher)
    prune_model(student, 0.3, criterion="l2", compensate="bias", imgsz=64, verify=False)
    imgs = _images(4, 64)
    rep = distill_unlabeled(student, copy.deepcopy(teacher), imgs, epochs=2, batch=4, lr=1e-3, progress=False)
    assert [h["epoch"] for h in rep["history"]] == [0, 1, 2]
    assert rep["gap_after"] < 0.8 * rep["gap_before"], rep["history"]
    assert abs(student_teacher_gap(student, teacher, imgs) - rep["gap_after"]) < 1e-4 * (1 + rep["gap_after"])


def _feature_loss(student, teacher, removed, x):
    from yolo_prune.train.features import FeatureTaps
    with torch.no_grad(), FeatureTaps(student, teacher, removed) as taps:
        student(x), teacher(x)
        return float(taps.loss())


def test_feature_taps_pair_the_kept_channels_of_every_bn():
    """The plan pairs each pruned BN with its teacher's kept channels: zero loss for a copy and for channels that
    were cut exactly (constant outputs compensated), positive for a real cut, no hook left behind."""
    from yolo_prune.train.features import feature_pairs
    teacher = _randomize_bn(load("yolov5nu.yaml")).eval()
    x = _images(2, 64)
    assert _feature_loss(copy.deepcopy(teacher), teacher, None, x) == 0.0
    exact = copy.deepcopy(teacher)
    for m in exact.modules():  # half of every BN's channels output a constant: the cut is exact
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data[::2] = 0.0
    ref = copy.deepcopy(exact)
    rep = prune_model(exact, threshold=1e-6, criterion="bn", compensate="exact", imgsz=64, verify=False)
    removed = rep["plan"]["layers"]
    pairs = feature_pairs(exact, ref, removed)
    assert {n for n, k in pairs.items() if k is not None} == {n for n in removed if n in pairs}
    assert len(pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in exact.modules())
    assert _feature_loss(exact, ref, removed, x) < 1e-8
    cut = copy.deepcopy(teacher)
    rep = prune_model(cut, 0.3, criterion="l2", compensate="bias", imgsz=64, verify=False)
    assert _feature_loss(cut, teacher, rep["plan"]["layers"], x) > 1e-3
    assert not any(m._forward_hooks for m in cut.modules()) and not any(m._forward_hooks for m in teacher.modules())
    with pytest.raises(ValueError, match="carries the plan"):
        feature_pairs(cut, teacher, None)


def test_feature_distillation_lowers_the_feature_error():
    from yolo_prune.train.unlabeled import distill_unlabeled
    teacher = _randomize_bn(load("yolov5nu.yaml")).eval()
    student = copy.deepcopy(teacher)
    removed = prune_model(student, 0.3, criterion="l2", compensate="bias", imgsz=64, verify=False)["plan"]["layers"]
    imgs = _images(4, 64)
    before = _feature_loss(student, teacher, removed, imgs)
    distill_unlabeled(student, copy.deepcopy(teacher), imgs, epochs=8, batch=4, lr=1e-3, progress=False,
                      features=1.0, removed=removed, head=0.0)  # a random head's outputs would swamp the term
    assert _feature_loss(student.eval(), teacher, removed, imgs) < 0.8 * before
    assert not any(m._forward_hooks for m in student.modules())


def test_mosaic_tiles_four_calibration_images_at_half_size():
    from yolo_prune.train.unlabeled import _mosaic
    imgs = _images(3, 64)
    gen = torch.Generator().manual_seed(0)
    m = _mosaic(imgs, 5, gen)
    assert m.shape == (5, 3, 64, 64)
    halves = torch.nn.functional.interpolate(imgs, size=(32, 32), mode="bilinear", align_corners=False,
                                             antialias=True)
    for tile in (m[:, :, :32, :32], m[:, :, :32, 32:], m[:, :, 32:, :32], m[:, :, 32:, 32:]):
        # every quadrant of every mosaic is one of the calibration images, downscaled
        err = (tile.unsqueeze(1) - halves.unsqueeze(0)).abs().amax(dim=(2, 3, 4))  # (5 mosaics, 3 images)
        assert bool((err.min(1).values < 1e-6).all())
    odd = _mosaic(_images(2, 65), 2, gen)
    assert odd.shape == (2, 3, 65, 65)


def test_time_budget_anneals_the_learning_rate_and_stops(monkeypatch):
    """A run capped by minutes follows the cosine over the time spent: it ends annealed, not mid-schedule."""
    import yolo_prune.train.unlabeled as ul
    clock = {"t": 1000.0}
    monkeypatch.setattr(ul.time, "time", lambda: clock["t"])
    budget = ul._Budget(steps=1000, max_minutes=1.0)
    assert budget.lr_factor() < 0.05  # warming up
    clock["t"] += 1.5  # 2.5 % of the time: half way through the warm-up
    assert budget.lr_factor() == pytest.approx(0.5, abs=0.03)
    clock["t"] += 28.5  # half the time, 1 % of the steps: the schedule is half way
    budget.done_steps = 10
    assert budget.fraction() == pytest.approx(0.5) and budget.lr_factor() == pytest.approx(0.5)
    clock["t"] += 60
    assert budget.fraction() == 1.0 and budget.lr_factor() == pytest.approx(0.0)
    no_cap = ul._Budget(steps=4, max_minutes=None, warmup=0.0)
    no_cap.done_steps = 2
    assert no_cap.fraction() == pytest.approx(0.5) and no_cap.lr_factor() == pytest.approx(0.5)


def test_distillation_stops_at_its_time_limit():
    from yolo_prune.train.unlabeled import distill_unlabeled
    teacher = _randomize_bn(load("yolov5nu.yaml")).eval()
    student = copy.deepcopy(teacher)
    prune_model(student, 0.3, criterion="l2", compensate="bias", imgsz=64, verify=False)
    rep = distill_unlabeled(student, teacher, _images(8, 64), epochs=50, batch=4, lr=1e-3, progress=False,
                            max_minutes=1e-9)
    assert rep["epochs"] == 1  # the first step used the whole budget
    with pytest.raises(ValueError, match="mosaic"):
        distill_unlabeled(student, teacher, _images(2, 64), mosaic=1.5, progress=False)


def test_finetune_unlabeled_cli_distils_a_pruned_checkpoint_within_its_time_budget(tmp_path, capsys):
    """tools/finetune.py --unlabeled: the pruned checkpoint (its plan pairs the features) is distilled from its
    teacher on a folder of images without labels, and written with its report."""
    import json

    from yolo_prune.commands.finetune import main
    from yolo_prune.models.checkpoint import save
    src = _image_folder(tmp_path / "imgs", 4, (60, 80, 3), ".jpg")
    teacher = tmp_path / "t.pt"
    save(_randomize_bn(load("yolov5nu.yaml")), teacher)
    prune_checkpoint(teacher, tmp_path / "p.pt", ratio=0.3, criterion="l2", compensate="bias", imgsz=64)
    main(["--weights", str(tmp_path / "p.pt"), "--teacher", str(teacher), "--unlabeled", str(src), "--epochs", "50",
          "--max-minutes", "0.05", "--imgsz", "64", "--batch", "2", "--distill-features", "1", "--out",
          str(tmp_path / "d")])
    assert "student-teacher gap" in capsys.readouterr().out
    report = json.loads((tmp_path / "d" / "distilled.json").read_text())
    assert 1 <= report["epochs"] < 50  # stopped by the 3-second budget, not by the epochs
    assert load(tmp_path / "d" / "distilled.pt").prune_plan  # the plan travels on
