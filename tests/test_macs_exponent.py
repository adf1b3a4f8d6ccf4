"""``macs_exponent``: the global ranking weighs each channel by the MACs its removal saves, and ``search`` keeps the
candidate cut whose outputs stay nearest the original's on the calibration images."""
import pytest
import torch

from test_latency import SmallNet
from test_reconstruct import _image_folder, _images, _randomize_bn
from yolo_prune.commands.prune import main as prune_main
from yolo_prune.graph import trace
from yolo_prune.models import load
from yolo_prune.prune import PlanError, prune_model
from yolo_prune.prune.plan import MacsModel, make_plan
from yolo_prune.prune.spec import SEARCHED_MACS_EXPONENTS, PruneSpec


def _v8(seed: int = 0):
    torch.manual_seed(seed)
    return _randomize_bn(load("yolov8n.yaml", nc=3))


def _saved_per_removed_channel(graph, plan) -> float:
    saved = MacsModel(graph, dict(graph.model.named_modules())).saved_per_channel()
    removed = [(saved[g.gid], len(plan.remove.get(g.gid, ()))) for g in graph.groups]
    return sum(s * n for s, n in removed) / sum(n for _, n in removed)


def test_exponent_moves_the_cut_to_channels_that_save_more_macs():
    graph = trace(_v8(), example=_images(1, 64))
    plans = {e: make_plan(graph, PruneSpec(target_macs=0.7, criterion="l2", macs_exponent=e)) for e in (0.0, 1.0)}
    assert all(p.macs_ratio_estimate <= 0.7 for p in plans.values())
    # per MAC saved, the exponent-1 cut removes fewer, more expensive channels
    assert plans[1.0].removed_channels < plans[0.0].removed_channels
    assert _saved_per_removed_channel(graph, plans[1.0]) > 1.5 * _saved_per_removed_channel(graph, plans[0.0])
    # exponent 0 is the plain global ranking
    plain = make_plan(graph, PruneSpec(target_macs=0.7, criterion="l2"))
    assert plain.remove == plans[0.0].remove


def test_make_plan_refuses_the_search_by_name():
    """Only prune_model can search (it cuts copies of the model): make_plan said nothing but a numpy TypeError."""
    graph = trace(SmallNet(), example=_images(1, 64))
    with pytest.raises(PlanError, match="make_plan: macs_exponent: expected a number, found 'search'"):
        make_plan(graph, PruneSpec(target_macs=0.7, macs_exponent="search"))


def test_search_keeps_the_candidate_with_the_smallest_gap():
    """The gap here is the pruned model's parameter count: the chosen cut must be the smallest trial, and the
    model pruned in place must be exactly that trial (same parameters, same outputs as a direct prune)."""
    seen = []

    def gap(pruned, original, images):
        assert sum(p.numel() for p in original.parameters()) > sum(p.numel() for p in pruned.parameters())
        seen.append(sum(p.numel() for p in pruned.parameters()))
        return float(seen[-1])

    calib = _images(6, 64, seed=3)
    det = _v8()
    rep = prune_model(det, target_macs=0.6, criterion="l2", compensate="reconstruct", imgsz=64, calib=calib,
                      calib_gap=gap, macs_exponent="search", verify=False, progress=False)
    trials = rep["macs_exponent"]["trials"]
    assert [t["macs_exponent"] for t in trials] == list(SEARCHED_MACS_EXPONENTS)
    assert len(set(seen)) >= 2  # the candidates really cut differently
    best = min(trials, key=lambda t: t["gap"])
    assert rep["macs_exponent"]["chosen"] == best["macs_exponent"] == rep["spec"]["macs_exponent"]
    assert sum(p.numel() for p in det.parameters()) == min(seen)
    direct = _v8()
    prune_model(direct, target_macs=0.6, criterion="l2", compensate="reconstruct", imgsz=64, calib=calib,
                macs_exponent=best["macs_exponent"], verify=False, progress=False)
    x = _images(1, 64, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(det.eval()(x)[0], direct.eval()(x)[0], rtol=0, atol=0)


def test_search_skips_a_nan_gap_and_refuses_when_every_gap_is_nan():
    """A NaN gap (e.g. a candidate whose outputs overflow) must not win: min() keeps a NaN that comes first."""
    seen = []

    def gap(pruned, original, images):  # NaN for E = 0, then 2, 3, 4: the second candidate is the nearest
        seen.append(0)
        return float("nan") if len(seen) == 1 else float(len(seen))

    torch.manual_seed(0)
    rep = prune_model(SmallNet(), target_macs=0.6, imgsz=64, calib=_images(2, 64), calib_gap=gap,
                      macs_exponent="search", verify=False, progress=False)
    assert rep["macs_exponent"]["chosen"] == SEARCHED_MACS_EXPONENTS[1]
    net = SmallNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(PlanError, match="macs_exponent search: expected a numeric output gap for at least one "
                                        "candidate, found nan at every exponent measured"):
        prune_model(net, target_macs=0.6, imgsz=64, calib=_images(2, 64), calib_gap=lambda *a: float("nan"),
                    macs_exponent="search", verify=False, progress=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the model is untouched


def test_search_needs_calibration_images_and_a_gap():
    with pytest.raises(PlanError, match="macs_exponent search needs unlabeled calibration images: pass --calib"):
        prune_model(_v8(), target_macs=0.7, macs_exponent="search", imgsz=64)
    with pytest.raises(PlanError, match="calib_gap"):
        prune_model(_v8(), target_macs=0.7, macs_exponent="search", imgsz=64, calib=_images(2, 64))


def test_prune_tool_chooses_the_exponent_by_the_output_gap(tmp_path, capsys):
    calib = _image_folder(tmp_path / "imgs", 4)
    out = tmp_path / "p.pt"
    prune_main(["--weights", "yolov8n.yaml", "--target-macs", "0.7", "--criterion", "l2", "--compensate",
                "reconstruct", "--calib", str(calib), "--calib-imgsz", "64", "--imgsz", "64", "--macs-exponent",
                "search", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "chosen by the output gap on 4 calibration images" in printed
    assert all(f"{e:g}: " in printed for e in SEARCHED_MACS_EXPONENTS)
    assert load(out).model is not None
    with pytest.raises(SystemExit):
        prune_main(["--weights", "yolov8n.yaml", "--target-macs", "0.7", "--macs-exponent", "some"])
    assert "expected a number or 'search', found 'some'" in capsys.readouterr().err
