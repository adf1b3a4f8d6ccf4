"""Latency-targeted pruning: the planner's target mechanism with a measured cost (mocked: deterministic)."""
import json

import pytest
import torch
from torch import nn

from yolo_prune.models import load
from yolo_prune.prune import PlanError, prune_model
from yolo_prune.prune.latency import LatencyModel, OrtMeasurer, plan_for_latency, widths_key


class BlockedCpu:
    """A fake runtime: each conv costs its MACs, x1.5 when its output width is not a multiple of 16 (an NCHWc
    CPU re-lays such tensors out), plus a fixed head/decode cost the pruning cannot touch."""
    backend = "ort-cpu"

    def __init__(self, imgsz=64, fixed_ms=0.002):
        self.imgsz, self.fixed_ms, self.calls = imgsz, fixed_ms, 0

    def environment(self):
        return {"backend": self.backend, "imgsz": self.imgsz, "threads": 1, "mock": "blocked-cpu"}

    def latency(self, model):
        from yolo_prune.eval.profile import profile  # noqa: F401  (same MACs notion as the planner)

        total, hooks = 0.0, []

        def hook(m, inp, out):
            nonlocal total
            macs = out.shape[2] * out.shape[3] * m.kernel_size[0] * m.kernel_size[1] * m.in_channels * \
                m.out_channels / m.groups
            total += macs * (1.0 if m.out_channels % 16 == 0 else 1.5) * 1e-9

        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(hook))
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, self.imgsz, self.imgsz))
        for h in hooks:
            h.remove()
        return total + self.fixed_ms

    def measure(self, reference, candidate):
        self.calls += 1
        return self.latency(reference), self.latency(candidate)


class SmallNet(nn.Module):
    """Five conv-BN-SiLU blocks and a fixed-width head: a planner-sized model that copies in milliseconds."""

    def __init__(self, widths=(32, 64, 64, 96, 128)):
        super().__init__()
        layers, cin = [], 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, 2 if i % 2 == 0 else 1, 1, bias=False), nn.BatchNorm2d(w), nn.SiLU()]
            cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 12, 1)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture
def v8n():  # named for what it stands in for: a detector body with prunable groups
    torch.manual_seed(0)
    det = SmallNet().eval()
    g = torch.Generator().manual_seed(1)
    for m in det.modules():
        if isinstance(m, nn.BatchNorm2d):  # distinct |gamma| so the bn ranking is not a tie
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.1
            m.running_var.data = torch.rand(m.num_features, generator=g) + 0.5
    return det


def test_target_latency_meets_the_target_and_picks_the_runtime_multiple(v8n, tmp_path):
    mock = BlockedCpu()
    base = mock.latency(v8n)
    reference = __import__("copy").deepcopy(v8n)
    rep = prune_model(v8n, target_latency=0.5, imgsz=64, latency_measurer=mock, latency_cache=tmp_path,
                      verify=False)
    lat = rep["latency"]
    measured = mock.latency(v8n) / base
    # the prediction is the measurement of the same widths: exact with a deterministic runtime
    assert lat["predicted_ratio"] == pytest.approx(measured, rel=1e-9)
    assert 0.5 * 0.9 < measured <= 0.5
    # both multiples were planned; 16 suits this runtime, so it removes less importance for the same latency
    cands = {c["round_to"]: c for c in lat["candidates"]}
    assert set(cands) == {8, 16}
    assert cands[16]["removed_importance"] < cands[8]["removed_importance"]
    assert lat["round_to"] == rep["round_to"] == 16
    assert all(m.out_channels % 16 == 0 or m.out_channels == r.out_channels
               for (n, m), r in zip(((n, m) for n, m in v8n.named_modules() if isinstance(m, nn.Conv2d)),
                                    (m for m in reference.modules() if isinstance(m, nn.Conv2d))))
    assert 0 < rep["removed_importance"] < 1
    # MACs are not latency here: the MACs ratio of the plan differs from its latency ratio
    assert abs(lat["macs_ratio_estimate"] - measured) > 0.005


def test_measurements_are_cached_on_disk_by_widths(v8n, tmp_path):
    first = BlockedCpu()
    model_a = __import__("copy").deepcopy(v8n)
    prune_model(model_a, target_latency=0.6, round_to=16, imgsz=64, latency_measurer=first, latency_cache=tmp_path,
                verify=False)
    assert first.calls > 3
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and all(0 < v < 1.01 for v in json.loads(files[0].read_text()).values())
    second = BlockedCpu()
    rep = prune_model(v8n, target_latency=0.6, round_to=16, imgsz=64, latency_measurer=second,
                      latency_cache=tmp_path, verify=False)
    assert second.calls == 0 and rep["latency"]["measured_probes"] == 0
    assert widths_key(model_a) == widths_key(v8n)
    # another runtime (environment) is another cache file
    other = BlockedCpu()
    other.backend = "torch"
    assert LatencyModel(v8n, None, other, cache_dir=tmp_path).cache_file != files[0]
    files[0].write_text("{not json")  # a damaged cache is measured again, not an error
    assert LatencyModel(v8n, None, BlockedCpu(), cache_dir=tmp_path).cache == {}


def test_unreachable_latency_target_and_bad_arguments(v8n, tmp_path):
    mock = BlockedCpu(fixed_ms=1.0)  # the fixed part alone is most of the latency
    with pytest.raises(PlanError, match=r"target latency 0.3: no plan .*target 0.3 of the LatencyModel cost"):
        prune_model(v8n, target_latency=0.3, imgsz=64, latency_measurer=mock, latency_cache=tmp_path, verify=False)
    with pytest.raises(PlanError, match="give exactly one of ratio, threshold, target_macs or target_latency"):
        prune_model(v8n, target_macs=0.5, target_latency=0.5, latency_measurer=mock)
    with pytest.raises(PlanError, match=r"target_latency: expected 0 < F <= 1.*found 1.5"):
        prune_model(v8n, target_latency=1.5, latency_measurer=mock)
    with pytest.raises(PlanError, match="--backend: expected one of ort-cpu, ort-cuda, ort-trt, torch"):
        OrtMeasurer("tensorflow")


def test_real_ort_cpu_measurement_on_a_tiny_model(tmp_path):
    """Real timings (1 thread, 64 px, onnxruntime CPU): only loose checks, the machine is shared."""
    from export_helpers import TinyDetector
    from yolo_prune.graph import trace

    torch.manual_seed(0)
    det = TinyDetector(SmallNet(widths=(32, 64, 64, 128, 128)), {i: f"c{i}" for i in range(8)}, [8]).eval()
    graph = trace(det, imgsz=64)
    meas = OrtMeasurer("ort-cpu", imgsz=64, threads=1, runs=5, warmup=1)
    lat = LatencyModel(det, graph, meas, cache_dir=tmp_path)
    plan, tried = plan_for_latency(graph, 0.7, lat, round_to=16, criterion="l1")
    assert plan.round_to == 16 and plan.removed_channels > 0
    assert 0.2 < plan.cost_ratio_estimate <= 0.7 * 1.05 and tried[0]["predicted_ratio"] == plan.cost_ratio_estimate
    assert sum(not p["cached"] for p in lat.probes) >= 3
    assert lat.cache_file.is_file() and meas.environment()["backend"] == "ort-cpu"
