"""The prune plan travels with the checkpoint, so feature distillation can pair a pruned student with its teacher
in every later stage: saved by prune.py, composed over two cuts, validated on load, used by the Trainer."""
import pytest
import torch

from yolo_prune.data.synthetic import make_synthetic
from yolo_prune.models import checkpoint, load
from yolo_prune.models.checkpoint import checked_plan, compose_plans
from yolo_prune.models.validate import ModelSpecError
from yolo_prune.prune.run import prune_checkpoint
from yolo_prune.train import train
from yolo_prune.train.features import feature_pairs

QUICK = {"workers": 0, "val": False, "warmup_epochs": 0, "nbs": 4, "mosaic": 0.0, "close_mosaic": 0, "ema": True,
         "deterministic": False, "epochs": 1, "imgsz": 64, "batch": 4}


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn") / "shapes", n_train=8, n_val=4, imgsz=64, nc=3, seed=1)


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    """A dense tiny yolov8n, the same cut once (0.3) and again (0.3 of the rest), without compensation, so that
    every kept BN keeps its teacher's γ: the pairing can be checked value for value."""
    d = tmp_path_factory.mktemp("cuts")
    torch.manual_seed(0)
    dense = load("yolov8n.yaml", nc=3)
    with torch.no_grad():  # distinct γ per channel, so a wrong pairing cannot match by chance
        for m in dense.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features) + 0.5)
    checkpoint.save(dense, d / "dense.pt")
    common = dict(criterion="bn", compensate="off", imgsz=64, round_to=1)
    first = prune_checkpoint(d / "dense.pt", d / "p1.pt", ratio=0.3, **common)
    prune_checkpoint(d / "p1.pt", d / "p2.pt", ratio=0.3, **common)
    return d, first


def _gammas_match(student, teacher, plan):
    pairs = feature_pairs(student, teacher, plan)
    teachers = dict(teacher.named_modules())
    for name, m in student.named_modules():
        if name in pairs:
            t = teachers[name].weight.detach()
            t = t if pairs[name] is None else t[pairs[name]]
            assert torch.equal(m.weight.detach(), t), name
    return pairs


def test_prune_writes_the_plan_into_the_checkpoint_and_load_reads_it(cuts):
    d, first = cuts
    meta = torch.load(d / "p1.pt", weights_only=True)["meta"]
    assert meta["prune_plan"] == first["plan"]["layers"] and meta["prune_plan"]
    student, dense = load(d / "p1.pt"), load(d / "dense.pt")
    assert student.prune_plan == first["plan"]["layers"] and dense.prune_plan is None
    pairs = _gammas_match(student, dense, student.prune_plan)
    assert any(k is not None for k in pairs.values())


def test_two_cuts_compose_into_the_first_models_positions(cuts):
    d, first = cuts
    twice, dense = load(d / "p2.pt"), load(d / "dense.pt")
    for name, gone in first["plan"]["layers"].items():
        assert set(gone) <= set(twice.prune_plan[name])  # the first cut's channels are still gone
    assert sum(map(len, twice.prune_plan.values())) > sum(map(len, first["plan"]["layers"].values()))
    _gammas_match(twice, dense, twice.prune_plan)
    with pytest.raises(ValueError, match="carries the plan"):  # the plan of the first cut alone does not fit
        feature_pairs(twice, dense, first["plan"]["layers"])


def test_compose_plans_by_hand():
    # 8 channels; the first cut removes 1 and 4 (kept 0 2 3 5 6 7), the second removes its positions 0 and 3
    assert compose_plans({"a": [1, 4]}, {"a": [0, 3], "b": [2]}, {"a": [3, 6], "b": [3, 4]}) == \
        {"a": [0, 1, 4, 5], "b": [2]}


@pytest.mark.parametrize("plan, found", [
    ([1, 2], "expected a mapping"),
    ({"a": "0,1"}, "layer name -> list of positions"),
    ({"a": [-1]}, "non-negative integers"),
    ({"a": [True]}, "non-negative integers"),
    ({"a": [0.5]}, "non-negative integers"),
    ({3: [1]}, "layer name -> list of positions"),
])
def test_a_hostile_plan_is_refused_naming_the_field(plan, found):
    with pytest.raises(ModelSpecError, match=found) as e:
        checked_plan(plan, "x.pt")
    assert "x.pt: field 'meta.prune_plan'" in str(e.value)


def test_a_huge_plan_is_refused_before_it_is_walked():
    with pytest.raises(ModelSpecError, match="at most"):
        checked_plan({"a": list(range(checkpoint.MAX_PLAN_POSITIONS + 1))}, "x.pt")


def test_trainer_adds_feature_distillation_and_removes_its_hooks(cuts, syn):
    d, _ = cuts
    student, teacher = load(d / "p1.pt"), load(d / "dense.pt")
    res = train(student, syn, out_dir=d / "ft", teacher=teacher, stage="finetune",
                overrides={**QUICK, "distill_features": 1.0, "sr": 0.0})
    assert res["history"][0]["loss_distill_feat"] > 0
    for model in (student, teacher):
        assert not any(m._forward_hooks for m in model.modules())
    assert load(d / "ft" / "last.pt").prune_plan == student.prune_plan  # kept for the next stage


def test_feature_distillation_needs_a_teacher_and_a_plan(cuts, syn):
    d, _ = cuts
    student = load(d / "p1.pt")
    with pytest.raises(ValueError, match="needs a teacher"):
        train(student, syn, out_dir=d / "ft2", stage="finetune", overrides={**QUICK, "distill_features": 1.0})
    student.prune_plan = None
    with pytest.raises(ValueError, match="carries the plan"):
        train(student, syn, out_dir=d / "ft3", teacher=load(d / "dense.pt"), stage="finetune",
              overrides={**QUICK, "distill_features": 1.0})
    assert not any(m._forward_hooks for m in student.modules())


def test_a_checkpoint_with_a_hostile_plan_does_not_load(tmp_path):
    det = load("yolov8n.yaml", nc=3)
    checkpoint.save(det, tmp_path / "bad.pt", meta={"prune_plan": {"model.0.bn": [-3]}})
    with pytest.raises(ModelSpecError, match=r"bad.pt: field 'meta.prune_plan'\['model.0.bn'\] expected non-negative"):
        load(tmp_path / "bad.pt")
