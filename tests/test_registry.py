"""The registries: a family, a criterion, a backend registered in one place is used everywhere."""
import pytest
import torch
from torch import nn

import yolo_prune  # noqa: F401
from yolo_prune.models import checkpoint, load, registry
from yolo_prune.models.detector import Detector
from yolo_prune.models.native import write_native
from yolo_prune.models.transfer import ClassConv, set_num_classes
from yolo_prune.models.validate import ModelSpecError
from yolo_prune.prune import PlanError
from yolo_prune.train.losses import AnchorFreeLoss, build_loss


class ToyNet(nn.Module):
    def __init__(self, width: int, nc: int):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, 2, 1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, nc, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


class ToyDetector(Detector):
    family = "toy"
    head_type = "toy"

    def decode(self, raw):
        return raw.flatten(2).transpose(1, 2).sigmoid()

    def head_modules(self):
        return ["model.head"]


def build_toy(base, nc=None, names=None, source=""):
    names = dict(enumerate(names.values() if isinstance(names, dict) else names)) if names else None
    nc = len(names) if names else (nc or base["nc"])
    names = names or {i: str(i) for i in range(nc)}
    spec = {"family": "toy", "base": dict(base), "nc": nc, "names": dict(names)}
    torch.manual_seed(0)
    return ToyDetector(ToyNet(int(base["width"]), nc), names, [2], spec=spec)


def _load_toy(path, nc=None, weights=None):
    width, file_nc = (int(v) for v in open(path).read().split())
    return build_toy({"width": width, "nc": file_nc}, nc=nc)


def _write_toy(det, out):
    p = out.with_suffix(".toy")
    p.write_text(f"{det.model.conv.out_channels} {det.nc}")
    return [p]


@pytest.fixture
def toy_family():
    family = registry.register(registry.Family(
        name="toy", sniff=lambda path, globals_: globals_ is None and path.suffix == ".toy", load=_load_toy,
        build=build_toy, loss="anchor_free", write_native=_write_toy, native_kind="toy file",
        head=registry.ClassHead(lambda det: [ClassConv("model.head", 1, 0, 2.0)],
                                lambda bias, nc, stride: bias.fill_(-1.0),
                                lambda det, nc: None)))
    try:
        yield family
    finally:
        registry.unregister("toy")


def test_a_registered_family_sniffs_loads_reloads_and_writes_its_native_file(toy_family, tmp_path):
    src = tmp_path / "m.toy"
    src.write_text("6 3")
    det = load(src)  # the loader found the family by sniffing, no branch names it
    assert isinstance(det, ToyDetector) and det.model.conv.out_channels == 6 and det.nc == 3
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        det.model.bn.running_mean.uniform_(-0.5, 0.5)  # weights that differ from a fresh build
        ours = checkpoint.save(det, tmp_path / "ours.pt")
        again = load(ours)  # our checkpoint names the family in its spec: build_from_spec looks it up
        assert torch.equal(again(x), det(x))
    report = write_native(det, ours)
    assert report["toy"] == str(tmp_path / "ours.toy") and report["files"] == [report["toy"]]
    assert load(report["toy"]).nc == 3
    with pytest.raises(ValueError, match="Detect head"):  # its loss is looked up by the name it registered
        build_loss(det, {"box": 7.5, "cls": 0.5, "dfl": 1.5}, 64)
    assert AnchorFreeLoss.components == ("box", "cls", "dfl")
    summary = set_num_classes(det, 5, ["a", "b", "c", "d", "e"])  # its ClassHead: a 5-row head
    assert det.model.head.out_channels == 5 and summary["replaced"] == ["model.head"]
    assert torch.equal(det.model.head.bias.detach(), torch.full((5,), -1.0))


def test_unknown_family_error_lists_the_registered_ones(toy_family):
    with pytest.raises(ModelSpecError, match=r"spec field 'family': expected one of .*, found 'nope'") as e:
        registry.build_from_spec({"family": "nope", "base": {}})
    assert all(name in str(e.value) for name in ("ultralytics", "yolov5", "darknet", "toy"))
    registry.unregister("toy")
    with pytest.raises(ValueError, match="unsupported model file type '.toy'"):
        load("x.toy")


def test_builtin_families_register_every_part():
    by_name = {f.name: f for f in registry.families()}
    assert {"ultralytics", "yolov5", "darknet"} <= set(by_name)
    for f in by_name.values():
        assert f.write_native and f.native_kind and f.head and f.loss
    assert by_name["ultralytics"].pickle_policy("builtins", "eval") is None
    assert by_name["yolov5"].pickle_policy("models.common", "C3") is not None


# ------------------------------------------------------------------------------------------------ criteria
def test_a_registered_criterion_is_planned_with_and_offered_by_the_cli(tmp_path):
    import numpy as np

    from yolo_prune.graph import trace
    from yolo_prune.prune import importance
    from yolo_prune.prune.importance import Criterion, criterion_names, register_criterion
    from yolo_prune.prune.plan import make_plan

    @register_criterion
    class LastFirst(Criterion):  # keeps the first positions of every group
        name = "last_first"

        def scores(self, group, modules, rng, stats):
            return np.arange(group.width, 0, -1, dtype=float)  # positive, like every score
    try:
        assert "last_first" in criterion_names()
        det = build_toy({"width": 16, "nc": 2})
        plan = make_plan(trace(det, imgsz=32), ratio=0.5, criterion="last_first", round_to=1)
        assert list(plan.remove.values()) == [list(range(8, 16))]
        from yolo_prune.commands.prune import main  # the CLI's choices come from the registry
        with pytest.raises(SystemExit):
            main(["--weights", "x.yaml", "--ratio", "0.5", "--criterion", "nope", "--out", str(tmp_path / "p.pt")])
    finally:
        importance._CRITERIA.pop("last_first", None)


def test_a_criterion_on_calibration_images_measures_its_own_statistics():
    """A criterion with needs_calibration gets what its own ``statistics`` measured on the calibration images;
    without images prune_model says which criterion needs them."""
    import numpy as np

    from yolo_prune.prune import importance, prune_model
    from yolo_prune.prune.importance import Criterion, register_criterion
    seen = {}

    @register_criterion
    class MeanInput(Criterion):  # keeps the positions whose producer is most active on the images
        name, needs_calibration = "mean_input", True

        def statistics(self, model, graph, images, positions, seed):
            seen["images"] = len(images)
            return {"marker": 7}

        def scores(self, group, modules, rng, stats):
            assert stats == {"marker": 7}
            return np.arange(1, group.width + 1, dtype=float)
    try:
        det = build_toy({"width": 16, "nc": 2})
        rep = prune_model(det, 0.5, criterion="mean_input", round_to=1, imgsz=32, verify=False, progress=False,
                          calib=torch.rand(3, 3, 32, 32))
        assert seen == {"images": 3} and rep["removed_channels"] == 8
        with pytest.raises(PlanError, match="criterion mean_input needs unlabeled calibration images"):
            prune_model(build_toy({"width": 16, "nc": 2}), 0.5, criterion="mean_input", imgsz=32, verify=False)
    finally:
        importance._CRITERIA.pop("mean_input", None)


def test_unknown_criterion_error_lists_the_registry():
    from yolo_prune.prune.importance import criterion_names
    from yolo_prune.prune.spec import PruneSpec

    with pytest.raises(ValueError, match="criterion: expected one of bn, l1, l2, fpgm, taylor, random, recon, "
                                         "found 'magic'"):
        PruneSpec(ratio=0.5, criterion="magic")
    assert criterion_names()[:7] == ("bn", "l1", "l2", "fpgm", "taylor", "random", "recon")


# ------------------------------------------------------------------------------------------------ PruneSpec
@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of ratio, threshold or target_macs"),
    ({"ratio": 0.5, "target_macs": 0.5}, "exactly one"),
    ({"ratio": 0.0}, r"ratio: expected 0 < ratio < 1, found 0.0"),
    ({"ratio": float("nan")}, "ratio: expected a finite number"),
    ({"target_macs": 1.5}, r"target_macs: expected 0 < F <= 1"),
    ({"target_latency": 0.0}, r"target_latency: expected 0 < F <= 1"),
    ({"ratio": 0.5, "round_to": 0}, "round_to: expected an integer >= 1"),
    ({"ratio": 0.5, "min_keep": 2}, "min_keep: expected 0 <= fraction <= 1"),
    ({"ratio": 0.5, "overrides": [("model.*", 1.0)]}, r"overrides\['model.\*'\]"),
    ({"ratio": 0.5, "compensate": "magic"}, "compensate: expected one of"),
    ({"ratio": 0.5, "macs_exponent": 0.1}, "macs_exponent 0.1: weighs channels by the MACs they save, so it needs "
                                           "target_macs or target_latency"),
    ({"target_macs": 0.5, "macs_exponent": "fast"}, "macs_exponent: expected -1 <= exponent <= 2 or 'search', "
                                                    "found 'fast'"),
    ({"target_macs": 0.5, "macs_exponent": 3}, "macs_exponent: expected -1 <= exponent <= 2"),
    ({"target_macs": 0.5, "macs_exponent": float("nan")}, "macs_exponent: expected a finite number"),
])
def test_prune_spec_refuses_out_of_bounds_values_once_for_everyone(kwargs, message):
    from yolo_prune.pipeline.config import _check_prune_spec
    from yolo_prune.prune.spec import PlanError, PruneSpec

    with pytest.raises(PlanError, match=message):
        PruneSpec(**kwargs)
    if "overrides" not in kwargs:  # the pipeline's value check is the same check
        cfg = {"ratio": None, "threshold": None, "target_macs": None, "target_latency": None, "criterion": "bn",
               "round_to": 8, "min_keep": 0.1, "ignore": [], "local": False, "compensate": "bias", "macs_exponent": 0.0,
               **kwargs}
        with pytest.raises(ValueError, match="pipeline config: .*" + message.split(":")[0]):
            _check_prune_spec(cfg)


def test_prune_report_holds_the_spec_and_the_plan(tmp_path):
    from yolo_prune.prune.api import prune_model
    from yolo_prune.prune.spec import PruneSpec

    det = build_toy({"width": 16, "nc": 2})
    with torch.no_grad():
        det.model.bn.weight.copy_(torch.arange(16, dtype=torch.float32) + 1)
    spec = PruneSpec(ratio=0.25, round_to=4)
    rep = prune_model(det, spec=spec, imgsz=32, trace_size=32)
    assert PruneSpec.from_dict(rep["spec"]) == spec
    assert rep["plan"]["layers"] == {"model.bn": [0, 1, 2, 3], "model.conv": [0, 1, 2, 3]}  # smallest |γ|
    assert list(rep["plan"]["groups"].values()) == [[0, 1, 2, 3]]
    assert det.model.bn.weight.tolist() == [float(v) for v in range(5, 17)]
    same = prune_model(build_toy({"width": 16, "nc": 2}), 0.25, round_to=4, imgsz=32, trace_size=32)
    assert same["spec"] == rep["spec"]  # keyword arguments build the same spec


def test_flat_keywords_and_option_objects_prune_the_same_and_refuse_what_they_cannot_place():
    from yolo_prune.prune.api import prune, prune_model
    from yolo_prune.prune.options import LatencySetup, PassOptions, sort_keywords
    from yolo_prune.prune.spec import PruneSpec

    def toy():
        torch.manual_seed(0)
        return build_toy({"width": 16, "nc": 2})

    a, b = toy(), toy()
    flat = prune_model(a, 0.25, criterion="l2", round_to=4, imgsz=32, trace_size=32, seed=3, verify=False)
    objects = prune(b, PruneSpec(ratio=0.25, criterion="l2", round_to=4),
                    run=PassOptions(imgsz=32, trace_size=32, seed=3, verify=False))
    assert flat["plan"] == objects["plan"] and flat["spec"] == objects["spec"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    _, sorted_ = sort_keywords("prune_model", {"threads": 2, "latency_cache": "c", "trace_size": 48}, None,
                               build_spec=False)
    assert sorted_["latency"] == LatencySetup(threads=2, cache="c") and sorted_["run"].trace_size == 48
    with pytest.raises(TypeError, match=r"prune_model\(\) got unexpected keyword argument\(s\) calib_imgsz"):
        prune_model(toy(), 0.25, calib_imgsz=320)  # a file-level keyword: prune_checkpoint's, not prune_model's
    with pytest.raises(TypeError, match="either spec= or the selection keywords.*found criterion"):
        prune_model(toy(), spec=PruneSpec(ratio=0.25), criterion="l2")  # never silently ignored


# ------------------------------------------------------------------------------------------------ backends
def test_backend_registry_feeds_benchmark_providers_and_latency_choices():
    from yolo_prune.export.benchmark import BACKENDS
    from yolo_prune.runtime.ort import provider_name
    from yolo_prune.prune.latency import LATENCY_BACKENDS, ROUND_TO_CANDIDATES
    from yolo_prune.runtime import backend_names, get_backend

    assert BACKENDS == backend_names() and set(LATENCY_BACKENDS) == set(backend_names(latency=True))
    assert provider_name("trt") == get_backend("ort-trt").provider == "TensorrtExecutionProvider"
    assert ROUND_TO_CANDIDATES["ort-cpu"] == get_backend("ort-cpu").round_to == (8, 16)
    assert "torch-cpu" not in LATENCY_BACKENDS  # no latency candidates registered for it
    with pytest.raises(ValueError, match="backend: expected one of torch, torch-cpu, .*found 'tpu'"):
        get_backend("tpu")


def test_one_set_parser_for_every_tool():
    from yolo_prune.overrides import parse_set

    assert parse_set(["mosaic=0", "lr0=0.01", "names=[a, b]", "x=null"]) == \
        {"mosaic": 0, "lr0": 0.01, "names": ["a", "b"], "x": None}
    with pytest.raises(ValueError, match="--set mosaic: expected KEY=VALUE"):
        parse_set(["mosaic"])
