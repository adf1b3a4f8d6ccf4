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
