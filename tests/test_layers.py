"""Layer handlers: one class per layer type; GroupNorm shows that adding a type is one class plus this test."""
import copy

import pytest
import torch
from torch import nn

from yolo_prune.eval.profile import profile
from yolo_prune.graph import trace
from yolo_prune.layers import CompensatedConv2d, Role, handler_for
from yolo_prune.models.spec import apply_layers, record_layers
from yolo_prune.prune import layer_widths, prune_model
from yolo_prune.prune.exactness import constant_channel_check


def test_each_layer_type_has_its_handler():
    cases = {nn.Conv2d(4, 8, 3): "DenseConvHandler", nn.Conv2d(8, 8, 3, groups=8): "DepthwiseConvHandler",
             nn.Conv2d(8, 8, 3, groups=2): "GroupedConvHandler", CompensatedConv2d(4, 8, 3): "CompensatedConvHandler",
             nn.BatchNorm2d(8): "BatchNormHandler", nn.Linear(4, 2): "LinearHandler",
             nn.GroupNorm(2, 8): "GroupNormHandler"}
    for m, want in cases.items():
        assert type(handler_for(m)).__name__ == want
    assert handler_for(nn.ReLU()) is None and handler_for(nn.ConvTranspose2d(4, 4, 2)) is None


def test_role_is_a_string_enum():
    assert Role.BN == "bn" and {"bn": 1}[Role.BN] == 1 and Role.OUT in {"out"} and f"{Role.LIN_IN}" == "lin_in"
    assert [r for r in Role if r.produces] == [Role.OUT, Role.DW, Role.LIN_OUT]


class GNNet(nn.Module):
    """conv -> GroupNorm(4 groups of 4) -> conv -> GroupNorm(8 groups of 2) -> depthwise -> 1x1 head."""

    def __init__(self):
        super().__init__()
        self.conv1, self.gn1 = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv2, self.gn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.GroupNorm(8, 16)
        self.dw, self.head = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 4, 1)
        g = torch.Generator().manual_seed(0)
        for gn in (self.gn1, self.gn2):  # distinct γ, β so kept channels can be told apart
            gn.weight.data = torch.rand(16, generator=g) + 0.5
            gn.bias.data = torch.rand(16, generator=g) - 0.5

    def forward(self, x):
        x = torch.relu(self.gn1(self.conv1(x)))
        return self.head(self.dw(torch.relu(self.gn2(self.conv2(x)))))


def test_group_norm_couples_whole_groups_in_the_trace():
    graph = trace(GNNet(), imgsz=32)
    by_producer = {g.signature[0][0]: g for g in graph.groups}
    g1 = by_producer["conv1"]
    assert g1.width == 4 and g1.signature == (("conv1", Role.OUT, 4), ("conv2", Role.IN, 4), ("gn1", Role.GN, 4))
    assert [sorted(s.index for s in ch if s.module == "gn1") for ch in g1.channels] == \
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    g2 = by_producer["conv2"]
    assert g2.width == 8 and ("gn2", Role.GN, 2) in g2.signature and ("dw", Role.DW, 2) in g2.signature
    assert "GroupNorm channels" in str(g1)


def test_group_norm_constant_groups_prune_exactly():
    rep = constant_channel_check(GNNet(), "exact", frac=0.5, example=torch.rand(1, 3, 40, 48))
    assert rep["removed_channels"] > 0 and rep["macs_ratio"] < 1
    assert rep["max_rel_diff"] < 1e-5


def test_group_norm_prunes_whole_groups_keeps_kept_channels_and_reloads_from_spec():
    model = GNNet().eval()
    ref = copy.deepcopy(model)
    x = torch.rand(2, 3, 32, 40)
    rep = prune_model(model, ratio=0.5, round_to=1, min_keep=0.0, imgsz=32, trace_size=32, compensate="off")
    assert (model.gn1.num_groups, model.gn1.num_channels) == (2, 8)
    assert (model.gn2.num_groups, model.gn2.num_channels) == (4, 8) and model.dw.groups == 8
    assert layer_widths(model)["conv2"] == [8, 8] and rep["macs_after"] == profile(model, 32)["macs"]
    # whole groups went, so the kept channels' GroupNorm statistics (and outputs) are the original ones
    kept = [int((ref.gn1.weight == w).nonzero()) for w in model.gn1.weight]
    starts = kept[::4]
    assert [kept[i:i + 4] for i in (0, 4)] == [list(range(k, k + 4)) for k in starts] and all(k % 4 == 0 for k in starts)
    with torch.no_grad():
        want = ref.gn1(ref.conv1(x))[:, kept]
        assert torch.allclose(model.gn1(model.conv1(x)), want, atol=1e-6)
        out = model(x)
    spec = record_layers(model)
    assert spec["gn1"] == {"type": "GroupNorm", "num_groups": 2, "num_channels": 8}
    again = GNNet()
    apply_layers(again, spec)
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(x), out)


def test_group_norm_refuses_partial_groups_and_bad_specs():
    gn = nn.GroupNorm(4, 16)
    with pytest.raises(ValueError, match="only lose whole groups of 4"):
        handler_for(gn).cut(gn, torch.tensor([0, 1, 2, 3, 4, 5, 6, 8]), None)
    with pytest.raises(ValueError, match=r"spec: layer 'gn1' \(GroupNorm\): expected num_groups dividing"):
        apply_layers(GNNet(), {"gn1": {"type": "GroupNorm", "num_groups": 3, "num_channels": 16}})
    with pytest.raises(ValueError, match=r"field 'layers.conv1.groups': expected an integer in 1\.\.\d+, found None"):
        apply_layers(GNNet(), {"conv1": {"type": "Conv2d", "in": 3, "out": 8}})


def test_kept_modes_restores_each_modules_own_flag_even_after_an_error():
    import pytest
    from torch import nn

    from yolo_prune.layers.modules import kept_modes
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    net[1].train()  # mixed: eval model with one BN in train mode
    with pytest.raises(RuntimeError), kept_modes(net):
        net.train()
        raise RuntimeError("inside")
    assert [m.training for m in net.modules()] == [False, False, True]


def test_tracing_and_profiling_keep_a_mixed_mode_model_as_it_was():
    from torch import nn

    from yolo_prune.eval.profile import profile
    from yolo_prune.graph.trace import trace
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).train()
    net[1].eval()  # training, with frozen BN statistics (the frozen-BN fine-tune's state)
    before = [m.training for m in net.modules()]
    trace(net, imgsz=32)
    profile(net, imgsz=32)
    assert [m.training for m in net.modules()] == before == [True, True, False, True, True]
