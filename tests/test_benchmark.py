"""Latency benchmark: rows per model x backend x batch, ratios vs MACs, outputs, skipped GPU backends."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from export_helpers import TinyDetector, TinyNet

from yolo_prune.export import export_onnx
from yolo_prune.export.benchmark import _labels, add_ratios, run_benchmark

ROOT = Path(__file__).resolve().parents[1]


class WideNet(TinyNet):
    """TinyNet with 4x the hidden width: the 'unpruned' model next to TinyNet's 'pruned' one."""

    def __init__(self, nc):
        super().__init__(nc)
        self.conv = torch.nn.Conv2d(3, 32, 3, 2, 1)
        self.bn = torch.nn.BatchNorm2d(32)
        self.head = torch.nn.Conv2d(32, 4 + nc, 1, 4)


def _model(net, label):
    det = TinyDetector(net, {0: "a", 1: "b"}, [8]).eval()
    det.label = label
    return det


def test_benchmark_rows_outputs_and_skips(tmp_path):
    wide, narrow = _model(WideNet(2), "wide"), _model(TinyNet(2), "narrow")
    onnx_file = tmp_path / "given.onnx"
    export_onnx(narrow, onnx_file, imgsz=32, batch=1, verbose=False)
    out = tmp_path / "bench"
    rows = run_benchmark([wide, narrow, onnx_file], imgsz=32, batches=(1, 2), runs=3, warmup=1,
                         backends=("torch", "ort-cpu", "ort-cuda", "ort-trt"), threads=1, out=out)
    assert len(rows) == 3 * 4 * 2
    for name in ("bench.md", "bench.json", "latency_vs_macs.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / "map_vs_latency.png").exists()  # no mAP without eval_kwargs

    ok = {(r["model"], r["backend"], r["batch"]): r for r in rows if r["status"] == "ok"}
    assert {k for k in ok if k[1] == "torch"} == {("wide", "torch", 1), ("wide", "torch", 2),
                                                  ("narrow", "torch", 1), ("narrow", "torch", 2)}
    assert ("given", "ort-cpu", 1) in ok and ("given", "ort-cpu", 2) not in ok  # static batch-1 file
    skipped_static = next(r for r in rows if r["model"] == "given" and r["backend"] == "ort-cpu" and r["batch"] == 2)
    assert "fixed batch 1" in skipped_static["reason"]
    for r in ok.values():
        assert 0 < r["latency_ms_min"] <= r["latency_ms_median"] <= r["latency_ms_p90"]
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1000 / r["latency_ms_median"])
        assert r["runs"] == 3 and r["macs"] > 0
        if r["backend"] == "ort-cpu":
            assert r["providers"] == ["CPUExecutionProvider"] and r["onnx_bytes"] > 0
    wide_row, narrow_row = ok[("wide", "ort-cpu", 1)], ok[("narrow", "ort-cpu", 1)]
    assert wide_row["macs_ratio"] == 1.0 and wide_row["latency_ratio"] == 1.0
    assert narrow_row["reference"] == "wide" and narrow_row["macs_ratio"] < 0.5
    assert narrow_row["ratio_gap"] == pytest.approx(narrow_row["latency_ratio"] / narrow_row["macs_ratio"])
    assert ok[("given", "ort-cpu", 1)]["macs"] == narrow_row["macs"]  # MACs of a bare .onnx from its sidecar

    if not torch.cuda.is_available():
        gpu = [r for r in rows if r["backend"] in ("ort-cuda", "ort-trt")]
        assert gpu and all(r["status"] == "skipped" and r["reason"] for r in gpu)
        assert all("\n" not in r["reason"] for r in gpu)
    md = (out / "bench.md").read_text()
    assert "| model | backend | batch |" in md and "| wide | ort-cpu | 1 |" in md
    if not torch.cuda.is_available():
        assert "skipped ort-cuda" in md and "skipped ort-trt" in md
    data = json.loads((out / "bench.json").read_text())
    env = data["environment"]
    assert env["threads"] == 1 and env["onnxruntime"] and env["torch"] and env["cpu"]
    assert len(data["rows"]) == len(rows)
    assert torch.get_num_threads() >= 1  # restored, not left at 1 by the benchmark


def test_op_profile_table(tmp_path):
    wide, narrow = _model(WideNet(2), "wide"), _model(TinyNet(2), "narrow")
    rows = run_benchmark([wide, narrow], imgsz=32, runs=2, warmup=0, backends=("ort-cpu",), threads=1,
                         out=tmp_path, op_profile=True)
    assert all(r["op_ms"] and all(v >= 0 for v in r["op_ms"].values()) for r in rows)
    assert "Conv" in rows[0]["op_ms"]
    ops = (tmp_path / "ops.md").read_text()
    assert "vs wide" in ops and "| Conv |" in ops and "| all |" in ops


def test_benchmark_eval_plumbing_and_map_plot(tmp_path, monkeypatch):
    coco = pytest.importorskip("yolo_prune.eval.coco", reason="evaluator not landed yet")
    seen = []

    def fake_evaluate(model, **kw):  # the real evaluator is covered in test_export / the eval tests
        seen.append((getattr(model, "label", type(model).__name__), kw))
        return {"mAP50-95": 0.25 if getattr(model, "label", "") == "wide" else 0.2, "mAP50": 0.4}

    monkeypatch.setattr(coco, "evaluate", fake_evaluate)
    rows = run_benchmark([_model(WideNet(2), "wide"), _model(TinyNet(2), "narrow")], imgsz=32, runs=2, warmup=0,
                         backends=("ort-cpu",), out=tmp_path, eval_kwargs={"data": "d.yaml", "imgsz": 32})
    assert [s[0] for s in seen] == ["wide", "narrow"] and seen[0][1] == {"threads": None, "data": "d.yaml", "imgsz": 32}
    assert [r["map50_95"] for r in rows] == [0.25, 0.2] and rows[0]["map50"] == 0.4
    assert (tmp_path / "map_vs_latency.png").stat().st_size > 0
    assert "0.2500" in (tmp_path / "bench.md").read_text()


def test_benchmark_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown .*ort-gpu"):
        run_benchmark([_model(TinyNet(2), "n")], imgsz=32, backends=("ort-gpu",), out=tmp_path)
    with pytest.raises(ValueError, match="at least one model"):
        run_benchmark([], out=tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        run_benchmark([tmp_path / "nope.onnx"], imgsz=32, out=tmp_path)


def test_labels_are_unique():
    assert _labels(["a/yolov8n.pt", "b/yolov8n.pt", "c.onnx"]) == ["yolov8n", "b_yolov8n", "c"]
    assert _labels(["x/m.pt", "x/m.onnx", "y/m.pt"]) == ["m", "x_m", "y_m"]


def test_benchmark_tool_cli(tmp_path, capsys):
    onnx_file = tmp_path / "n.onnx"
    export_onnx(_model(TinyNet(2), "n"), onnx_file, imgsz=32, verbose=False)
    spec = importlib.util.spec_from_file_location("benchmark_tool", ROOT / "tools" / "benchmark.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "b"
    assert tool.main(["--weights", str(onnx_file), "--imgsz", "32", "--runs", "2", "--warmup", "0",
                      "--backends", "ort-cpu", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| n | ort-cpu | 1 | 32x32 |" in printed and (out / "bench.json").is_file()


def test_ratios_compare_within_one_architecture():
    def row(model, arch, macs, ms):
        return {"model": model, "architecture": arch, "backend": "ort-cpu", "batch": 1, "status": "ok",
                "macs": macs, "latency_ms_median": ms}

    rows = [row("v5n", "yolov5:a", 100, 10.0), row("v5n-p", "yolov5:a", 50, 6.0),
            row("v8n", "ultralytics:b", 200, 30.0), row("v8n-p", "ultralytics:b", 100, 15.0)]
    add_ratios(rows)
    by = {r["model"]: r for r in rows}
    assert by["v5n-p"]["reference"] == "v5n" and by["v8n-p"]["reference"] == "v8n"
    assert by["v5n-p"]["macs_ratio"] == 0.5 and by["v5n-p"]["latency_ratio"] == pytest.approx(0.6)
    assert by["v5n-p"]["ratio_gap"] == pytest.approx(1.2) and by["v8n-p"]["ratio_gap"] == pytest.approx(1.0)


@pytest.mark.slow  # two small COCO evaluations at 320 px
def test_benchmark_real_eval_torch_and_onnx(tmp_path, yolov5n_pt, coco128):
    pytest.importorskip("yolo_prune.eval.coco", reason="evaluator not landed yet")
    onnx_file = tmp_path / "v5n.onnx"
    export_onnx(yolov5n_pt, onnx_file, imgsz=320, dynamic=True, verbose=False)
    kw = {"images": coco128 / "images" / "val2017", "ann": coco128 / "annotations" / "instances_val2017.json",
          "imgsz": 320, "max_images": 16, "verbose": False}
    rows = run_benchmark([yolov5n_pt, onnx_file], imgsz=320, runs=2, warmup=0, backends=("ort-cpu",), threads=1,
                         out=tmp_path / "b", eval_kwargs=kw)
    maps = [r["map50_95"] for r in rows]
    assert all(m is not None and m > 0.05 for m in maps)
    assert abs(maps[0] - maps[1]) < 0.002
    assert (tmp_path / "b" / "map_vs_latency.png").stat().st_size > 0


def test_timing_sessions_do_not_spin_between_runs_but_other_sessions_do(tmp_path):
    """Sessions timed in turn must not busy-wait on the cores the running one needs (see make_session)."""
    from yolo_prune.runtime.ort import make_session
    from yolo_prune.runtime.runners import ort_session

    path = tmp_path / "m.onnx"
    export_onnx(_model(TinyNet(2), "n"), path, imgsz=32, verbose=False)
    timing = ort_session(path, "ort-cpu", 2, trt_fp16=False)
    other = make_session(path, providers=["cpu"], threads=2)  # evaluation, export checks: onnxruntime's default

    def spinning_entry(session):
        try:
            return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:  # not set: onnxruntime's default, which spins
            return None

    assert spinning_entry(timing) == "0" and spinning_entry(other) is None
    x = torch.rand(1, 3, 32, 32).numpy()
    name = timing.get_inputs()[0].name
    assert (timing.run(None, {name: x})[0] == other.run(None, {name: x})[0]).all()  # same numbers either way
