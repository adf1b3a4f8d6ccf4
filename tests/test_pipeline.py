"""End-to-end pipeline on a tiny synthetic set (imgsz 64, 1 epoch per stage), its report, re-runs and config checks."""
import json
import shutil
from pathlib import Path

import pytest

from yolo_prune.pipeline import STAGE_DIRS, resolve_config, run_pipeline

TINY = {"imgsz": 64, "batch": 4, "eval_batch": 4, "synthetic_train": 8, "synthetic_val": 4, "epochs_baseline": 1,
        "epochs_sparse": 1, "epochs_finetune": 1, "bench_runs": 3, "bench_warmup": 1, "bench_backends": ["ort-cpu"],
        "train.workers": 0, "train.val_max_images": 4, "train.close_mosaic": 0}
PNGS = ("gamma_hist.png", "kept_channels.png", "map_vs_latency.png", "training_curves.png")


def _tokens(out: Path) -> dict:
    return {name: json.loads((out / d / "stage.json").read_text())["token"]
            for name, d in STAGE_DIRS.items() if (out / d / "stage.json").is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    cfg = resolve_config(None, {**TINY, "out": str(out)})
    summary = run_pipeline(cfg, progress=False)
    return out, cfg, summary


def test_end_to_end_outputs_and_report(tiny_run):
    out, _, summary = tiny_run
    expected = {"data": ["shapes/data.yaml"], "baseline": ["best.pt", "results.csv"], "eval_baseline": ["metrics.json"],
                "sparse": ["sparse.pt", "results.csv", "metrics.json"],
                "prune": ["pruned.pt", "pruned.json", "gamma.json"], "eval_pruned": ["metrics.json"],
                "finetune": ["best.pt", "results.csv"], "eval_finetuned": ["metrics.json"],
                "export": ["baseline.onnx", "final.onnx", "final.onnx.json"], "benchmark": ["bench.json", "bench.md"]}
    for stage, files in expected.items():
        for f in files:
            assert (out / STAGE_DIRS[stage] / f).is_file(), f"{STAGE_DIRS[stage]}/{f} missing"
        assert (out / STAGE_DIRS[stage] / "stage.json").is_file()
    assert all(not s["skipped"] for s in summary["stages"].values())
    assert (out / "config.yaml").is_file()

    md = (out / "report.md").read_text()
    assert "| stage | params (M) | GMACs |" in md and "ort-cpu ms" in md
    for label in ("| baseline |", "| sparse |", "| pruned |", "| fine-tuned |"):
        assert label in md
    assert "python tools/finetune.py" in md and "python tools/prune.py" in md and "python tools/export_onnx.py" in md
    assert "kept" in md and "speed" in md
    # 'auto' training settings are resolved in the commands: ultralytics' AdamW rule for 3 classes, nbs = batch
    assert "lr0=0.001429" in md and "nbs=4" in md and "lr0=auto" not in md
    for png in PNGS:
        assert (out / png).is_file() and (out / png).stat().st_size > 1000, png
        assert f"]({png})" in md

    report = json.loads((out / "report.json").read_text())
    rows = {r["stage"]: r for r in report["rows"]}
    assert rows["pruned"]["macs"] < rows["baseline"]["macs"]
    assert rows["fine-tuned"]["macs"] == rows["pruned"]["macs"]  # fine-tuning keeps the pruned widths
    assert rows["baseline"]["latency_ms"]["ort-cpu"] > 0 and rows["fine-tuned"]["latency_ms"]["ort-cpu"] > 0
    assert report["numbers"]["macs_ratio"] < 0.75  # asked for 0.5x; round_to=8 coarsens it on a 64 px nano model
    gamma = json.loads((out / STAGE_DIRS["prune"] / "gamma.json").read_text())
    assert gamma["removed_count"] > 0 and gamma["threshold"] is not None


def test_rerun_after_deleting_finetune_redoes_only_later_stages(tiny_run):
    out, cfg, _ = tiny_run
    before = _tokens(out)
    shutil.rmtree(out / STAGE_DIRS["finetune"])
    summary = run_pipeline(cfg, progress=False)
    after = _tokens(out)
    skipped = {n for n, s in summary["stages"].items() if s["skipped"]}
    assert skipped == {"data", "baseline", "eval_baseline", "sparse", "prune", "eval_pruned"}
    for name in ("data", "baseline", "eval_baseline", "sparse", "prune", "eval_pruned"):
        assert after[name] == before[name], name
    for name in ("finetune", "eval_finetuned", "export", "benchmark"):
        assert after[name] != before[name], name
    assert (out / "report.md").is_file()


def test_auto_lr0_follows_ultralytics_rule():
    from yolo_prune.pipeline import auto_lr0

    assert auto_lr0("AdamW", 3) == 0.001429 and auto_lr0("AdamW", 80) == 0.000119 and auto_lr0("SGD", 80) == 0.01


def test_unknown_keys_are_rejected_with_a_hint(tmp_path):
    with pytest.raises(KeyError, match="did you mean 'epochs_sparse'"):
        resolve_config(None, {"epochs_sparce": 3})
    with pytest.raises(KeyError, match="did you mean 'train.lr0'"):
        resolve_config(None, {"train.lr00": 0.1})
    bad = tmp_path / "p.yaml"
    bad.write_text("targt_macs: 0.4\n")
    with pytest.raises(KeyError, match=r"p\.yaml: unknown key 'targt_macs'; did you mean 'target_macs'"):
        resolve_config(bad)


def test_overrides_layer_over_yaml_and_one_pruning_target_survives(tmp_path):
    layer = tmp_path / "p.yaml"
    layer.write_text("ratio: 0.3\nimgsz: 96\ntrain:\n  lr0: 0.01\n")
    cfg = resolve_config(layer, {"imgsz": 160, "train.mosaic": 0.0})
    assert cfg["ratio"] == 0.3 and cfg["target_macs"] is None  # the yaml's ratio replaced the default target
    assert cfg["imgsz"] == 160  # flag beats yaml
    assert cfg["train"]["lr0"] == 0.01 and cfg["train"]["mosaic"] == 0.0
    assert cfg["train"]["optimizer"] == "AdamW"  # untouched defaults of the section survive
    with pytest.raises(ValueError, match="exactly one of target_macs, ratio, threshold"):
        resolve_config(None, {"ratio": 0.3, "target_macs": 0.5})
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        resolve_config(None, {"weights": str(tmp_path / "nope.pt")})
    with pytest.raises(ValueError, match="'imgsz': expected an integer"):
        resolve_config(None, {"imgsz": "big"})
    with pytest.raises(ValueError, match="targeted fades the channels a target_macs cut removes; set target_macs"):
        resolve_config(layer, {"sparsity": "targeted"})
    with pytest.raises(ValueError, match="criterion must be bn; found 'l2'"):
        resolve_config(None, {"sparsity": "targeted", "criterion": "l2"})


def test_cli_reports_config_errors(capsys):
    import runpy
    import sys

    tool = Path(__file__).resolve().parents[1] / "tools" / "pipeline.py"
    argv = sys.argv
    sys.argv = [str(tool), "--set", "epochs_finetun=2"]
    try:
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(tool), run_name="__main__")
    finally:
        sys.argv = argv
    assert e.value.code == 2
    assert "did you mean 'epochs_finetune'" in capsys.readouterr().err


def test_targeted_sparsity_makes_the_cut_free(tmp_path):
    """sparsity: targeted fades exactly the channels the prune stage removes, so pruning changes no mAP."""
    out = tmp_path / "run"
    cfg = resolve_config(None, {**TINY, "out": str(out), "sparsity": "targeted", "compensate": "exact",
                                "epochs_finetune": 0})
    run_pipeline(cfg, progress=False)
    rows = {r["stage"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert rows["pruned"]["macs"] <= 0.75 * rows["baseline"]["macs"]
    assert rows["pruned"]["mAP50-95"] == pytest.approx(rows["sparse"]["mAP50-95"], abs=1e-3)
    pruned = json.loads((out / STAGE_DIRS["prune"] / "pruned.json").read_text())
    assert pruned["verification"]["max_rel_diff"] < 1e-4  # only constant (γ = 0) channels were cut
    assert "sparsity=targeted" in (out / "report.md").read_text()


def test_quantize_stage_adds_an_int8_row_and_reuses_the_earlier_stages(tiny_run):
    out, cfg, _ = tiny_run
    cfg = {**cfg, "quantize": True, "quantize_calib_images": 4, "quantize_keep_fp32": "none"}
    summary = run_pipeline(cfg, progress=False)
    skipped = {n for n, s in summary["stages"].items() if s["skipped"]}
    assert {"prune", "finetune", "export"} <= skipped and "quantize" not in skipped and "benchmark" not in skipped
    assert (out / STAGE_DIRS["quantize"] / "final.int8.onnx").is_file()
    assert (out / STAGE_DIRS["quantize"] / "final.int8.onnx.json").is_file()
    report = json.loads((out / "report.json").read_text())
    rows = {r["stage"]: r for r in report["rows"]}
    assert report["rows"][-1]["stage"] == "int8"
    assert rows["int8"]["macs"] == rows["fine-tuned"]["macs"] and rows["int8"]["latency_ms"]["ort-cpu"] > 0
    assert "| int8 |" in (out / "report.md").read_text() and "python tools/quantize.py" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="'quantize': expected true or false"):
        resolve_config(None, {"quantize": "yes"})
    with pytest.raises(ValueError, match="exactly one of target_macs, ratio, threshold, target_latency"):
        resolve_config(None, {"target_latency": 0.5, "target_macs": 0.5})
    assert resolve_config(None, {"target_latency": 0.5})["target_macs"] is None
