"""INT8 quantization of exported detectors: end to end on tiny models, closeness to fp32, eval, bad inputs."""
import json
import sys

import cv2
import numpy as np
import onnx
import pytest

from export_helpers import TinyDetector, TinyNet, randomize_bn
from yolo_prune.export.onnx import export_onnx
from yolo_prune.export.quantize import (DECODE, QuantizeError, calibration_images, detection_error, node_units,
                                        quantize_onnx, slower_in_int8, unit_of)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from yolo_prune.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("syn"), n_train=12, n_val=6, imgsz=64, nc=2, seed=3)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "m.onnx"
    det = TinyDetector(TinyNet(2), {0: "circle", 1: "square"}, [8]).eval()  # the synthetic set's classes
    export_onnx(randomize_bn(det), out, imgsz=64, verbose=False)
    return out


def _run(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _fixed_input(data_yaml):
    from yolo_prune.export.quantize import LetterboxCalibrationReader

    paths = calibration_images(data_yaml.parent / "images" / "val", 1)
    return LetterboxCalibrationReader(paths, "images", (64, 64)).arrays[0]


def test_quantize_end_to_end_close_to_fp32_and_sidecar_carried(tiny_onnx, synthetic, tmp_path):
    out = tmp_path / "m.int8.onnx"
    rep = quantize_onnx(tiny_onnx, out, synthetic, calib_images=8, keep_fp32="auto", latency_check=False,
                        verbose=False)
    q = onnx.load(str(out))
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and rep["quantize_nodes"] > 0
    assert rep["calib_images"] == 8
    # the measured pass keeps the decode fp32: its final concat mixes pixel boxes with 0..1 scores, and one int8
    # scale for both flattens every score to the same value
    assert rep["kept_fp32_units"] == [DECODE] and rep["error"] < rep["error_all_int8"] / 3
    side = json.loads((tmp_path / "m.int8.onnx.json").read_text())
    fp32_side = json.loads((tiny_onnx.parent / "m.onnx.json").read_text())
    assert side["names"] == fp32_side["names"] and side["strides"] == fp32_side["strides"]
    assert side["onnx"] == "m.int8.onnx" and side["quantization"]["kept_fp32_units"] == [DECODE]
    assert {p.key: p.value for p in q.metadata_props}["names"] == json.dumps({"0": "circle", "1": "square"})
    # a fixed real input: int8 output close to the fp32 one (scores in 0..1, boxes in pixels)
    x = _fixed_input(synthetic)
    ref, got = _run(tiny_onnx, x), _run(out, x)
    assert ref.shape == got.shape
    assert np.abs(ref[..., 4:] - got[..., 4:]).max() < 0.05
    assert np.abs(ref[..., :4] - got[..., :4]).max() < 0.05 * 64
    assert detection_error(ref, got) < 0.05 and detection_error(ref, ref) == 0.0
    assert not list(tmp_path.glob(".*part"))


def test_eval_runs_on_the_int8_model(tiny_onnx, synthetic, tmp_path):
    from yolo_prune.eval.coco import evaluate

    out = tmp_path / "m.int8.onnx"
    quantize_onnx(tiny_onnx, out, synthetic, calib_images=4, keep_fp32="none", latency_check=False, verbose=False)
    r8 = evaluate(out, data=synthetic, imgsz=64, batch=1, verbose=False)
    r32 = evaluate(tiny_onnx, data=synthetic, imgsz=64, batch=1, verbose=False)
    assert r8["images"] == r32["images"] == 6
    assert 0.0 <= r8["mAP50-95"] <= 1.0 and r8["predictions"] > 0


def test_sensitivity_pass_measures_every_unit_and_keeps_the_worst(tiny_onnx, synthetic, tmp_path):
    rep = quantize_onnx(tiny_onnx, tmp_path / "a.onnx", synthetic, calib_images=6, keep_fp32=1,
                        latency_check=False, verbose=False)
    units = [s["unit"] for s in rep["sensitivity"]]
    assert DECODE in units and len(units) == rep["units"] == len(set(units))
    gains = [s["gain"] for s in rep["sensitivity"]]
    assert gains == sorted(gains, reverse=True)
    assert rep["kept_fp32_units"] == [units[0]]
    # keeping the most sensitive unit in fp32 cuts the error by what the pass measured for it
    assert rep["error"] == pytest.approx(rep["sensitivity"][0]["error_if_fp32"], rel=1e-6, abs=1e-9)
    auto = quantize_onnx(tiny_onnx, tmp_path / "b.onnx", synthetic, calib_images=6, keep_fp32="auto",
                         latency_check=False, verbose=False)
    assert auto["error"] <= auto["error_all_int8"] + 1e-12
    assert set(auto["kept_fp32_units"]) <= set(units)


def test_keep_named_units_in_fp32(tiny_onnx, synthetic, tmp_path):
    out = tmp_path / "n.onnx"
    rep = quantize_onnx(tiny_onnx, out, synthetic, calib_images=4, keep_fp32="decode", latency_check=False,
                        verbose=False)
    assert rep["kept_fp32_units"] == [DECODE] and rep["sensitivity"] == []
    q = onnx.load(str(out))
    # the decode stays fp32: no QuantizeLinear takes the output of a decode node
    decode = set(node_units(onnx.load(str(tiny_onnx)))[DECODE])
    decode_out = {o for n in q.graph.node if n.name in decode for o in n.output}
    assert len(decode) > 5 and decode_out
    assert not [n.name for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in decode_out]
    with pytest.raises(QuantizeError, match="unknown unit.*'nope'.*units of m.onnx: .*decode"):
        quantize_onnx(tiny_onnx, tmp_path / "x.onnx", synthetic, calib_images=2, keep_fp32="nope", verbose=False)


def test_units_of_a_yolov5_style_graph():
    assert unit_of("/model/model.7/cv1/conv/Conv") == "model.7"
    assert unit_of("/model/model.24/m.0/Conv_token_12") == "model.24"
    assert unit_of("/model.22/dfl/conv/Conv") == "model.22"
    assert unit_of("/Concat_3") == ""
    h = onnx.helper
    nodes = [h.make_node("Conv", ["x", "w"], ["a"], name="/model/model.0/conv/Conv"),
             h.make_node("Sigmoid", ["a"], ["b"], name="/model/model.0/act/Sigmoid"),
             h.make_node("Conv", ["b", "w2"], ["c"], name="/model/model.1/Conv"),
             h.make_node("Sigmoid", ["c"], ["d"], name="/model/model.1/Sigmoid"),
             h.make_node("Mul", ["d", "c"], ["y"])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    units = node_units(h.make_model(graph))
    assert units == {"model.0": ["/model/model.0/conv/Conv", "/model/model.0/act/Sigmoid"],
                     "model.1": ["/model/model.1/Conv"], DECODE: ["/model/model.1/Sigmoid", "Mul_4"]}


def test_latency_rule_picks_units_slower_in_int8():
    fp32 = {"model.0": 7.0, "model.1": 3.0, "model.2": 2.0, "": 1.0}
    int8 = {"model.0": 15.0, "model.1": 2.0, "model.2": 2.1, "": 5.0}
    assert [r["unit"] for r in slower_in_int8(fp32, int8)] == ["model.0"]


def _write_images(folder, n, size=48):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8))


def test_calibration_folder_and_bad_calibration_sources(tiny_onnx, tmp_path):
    _write_images(tmp_path / "imgs", 5)
    assert [p.name for p in calibration_images(tmp_path / "imgs", 3)] == ["0.png", "2.png", "4.png"]
    assert len(calibration_images(tmp_path / "imgs", 50)) == 5
    with pytest.raises(QuantizeError, match=r"--calib .*missing: not found \(expected a data yaml"):
        quantize_onnx(tiny_onnx, tmp_path / "q.onnx", tmp_path / "missing", verbose=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuantizeError, match=r"--calib .*empty: .*no images found"):
        quantize_onnx(tiny_onnx, tmp_path / "q.onnx", tmp_path / "empty", verbose=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(QuantizeError, match=r"none of the 1 calibration images could be read"):
        quantize_onnx(tiny_onnx, tmp_path / "q.onnx", tmp_path / "broken", verbose=False)
    with pytest.raises(QuantizeError, match="--calib-images: expected an integer >= 1, found 0"):
        quantize_onnx(tiny_onnx, tmp_path / "q.onnx", tmp_path / "imgs", calib_images=0, verbose=False)
    with pytest.raises(QuantizeError, match=r"--calib-images 10000000: at 64x64 that needs .* GiB of memory; use at most"):
        quantize_onnx(tiny_onnx, tmp_path / "q.onnx", tmp_path / "imgs", calib_images=10_000_000, verbose=False)
    with pytest.raises(QuantizeError, match="--weights .*nope.onnx: expected an exported fp32 .onnx file"):
        quantize_onnx(tmp_path / "nope.onnx", tmp_path / "q.onnx", tmp_path / "imgs", verbose=False)
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(QuantizeError, match="junk.onnx: not a readable ONNX model"):
        quantize_onnx(tmp_path / "junk.onnx", tmp_path / "q.onnx", tmp_path / "imgs", verbose=False)
    with pytest.raises(QuantizeError, match="--out .*must differ"):
        quantize_onnx(tiny_onnx, tiny_onnx, tmp_path / "imgs", verbose=False)
    assert not (tmp_path / "q.onnx").exists()


def test_quantize_tool_with_latency_check_and_error_exit(tiny_onnx, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import quantize as tool
    finally:
        sys.path.pop(0)
    _write_images(tmp_path / "imgs", 4, size=64)
    out = tmp_path / "t.int8.onnx"
    args = ["--weights", str(tiny_onnx), "--calib", str(tmp_path / "imgs"), "--calib-images", "4", "--keep-fp32",
            "none", "--threads", "1", "--out", str(out)]
    assert tool.main(args) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    side = json.loads((tmp_path / "t.int8.onnx.json").read_text())["quantization"]
    assert side["latency_check"] is True
    assert all(k["int8_ms"] > k["fp32_ms"] for k in side["kept_for_latency"])
    assert tool.main(args[:2] + ["--calib", str(tmp_path / "none")] + args[4:]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --calib") and "not found" in err and len(err.splitlines()) == 1


def test_trt_target_is_symmetric_int8_and_benchmark_skips_trt_without_gpu(tiny_onnx, synthetic, tmp_path):
    from onnx import numpy_helper

    from yolo_prune.export.benchmark import run_benchmark

    out = tmp_path / "m.trt.onnx"
    rep = quantize_onnx(tiny_onnx, out, synthetic, calib_images=4, keep_fp32="decode", latency_check=False,
                        target="trt", verbose=False)
    assert rep["activation_type"] == "int8" and rep["per_channel"] is True
    q = onnx.load(str(out))
    inits = {i.name: i for i in q.graph.initializer}
    zps = [numpy_helper.to_array(inits[n.input[2]]) for n in q.graph.node
           if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)  # TensorRT wants zero points of 0
    assert _run(out, _fixed_input(synthetic)).shape == _run(tiny_onnx, _fixed_input(synthetic)).shape
    with pytest.raises(ValueError, match="--trt-int8 needs --calib"):
        run_benchmark([str(tiny_onnx)], imgsz=64, backends=("ort-trt",), trt_int8=True, out=tmp_path / "b")
    import torch
    if not torch.cuda.is_available():
        rows = run_benchmark([str(tiny_onnx)], imgsz=64, runs=2, warmup=0, backends=("ort-cpu", "ort-trt"),
                             trt_int8=True, calib=synthetic, out=tmp_path / "b")
        trt = [r for r in rows if r["backend"] == "ort-trt"]
        assert trt and trt[0]["status"] == "skipped" and "GPU" in trt[0]["reason"] or "not in this" in trt[0]["reason"]
        assert not list((tmp_path / "b").rglob("*.trt-int8.onnx"))  # nothing quantized for a backend that cannot run


@pytest.mark.slow
def test_gpu_check_script_runs_end_to_end_on_cpu(tmp_path, yolov5n_pt):
    """benchmarks/gpu_check.sh at toy sizes: without a GPU every GPU backend is skipped with its reason."""
    import os
    import subprocess

    env = {**os.environ, "PYTHON": sys.executable, "IMGSZ": "64", "BATCHES": "1", "RUNS": "2", "WARMUP": "0", "LAT_TARGET": "0.7",
           "CALIB": str(yolov5n_pt.parents[1] / "coco128" / "images" / "val2017")}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| model | backend | precision | batch |" in md
    for m in ("v5n_b1", "v5n_m50_b1", "v5n_lat50_b1", "v5n_m50_b1.int8", "v8n_b1", "v8n_lat50_b1"):
        assert f"| {m} | " in md, m
    import torch
    if not torch.cuda.is_available():
        assert "- torch-cuda" in md and "- ort-trt (int8)" in md and "- ort-cuda" in md


def test_op_profile_table_lists_int8_ops_the_fp32_reference_lacks():
    from yolo_prune.export.benchmark import op_profile_markdown

    rows = [{"model": "fp32", "reference": "fp32", "op_ms": {"Conv": 10.0, "Mul": 2.0}},
            {"model": "int8", "reference": "fp32", "op_ms": {"QLinearConv": 6.0, "Mul": 1.0}}]
    md = op_profile_markdown(rows)
    assert "| Conv | 10.00 | 0.00x | 83.3% |" in md and "| Mul | 2.00 | 0.50x | 16.7% |" in md
    assert "| QLinearConv | - | 6.00 ms | - |" in md and "| all | 12.00 | 0.58x | 100% |" in md
