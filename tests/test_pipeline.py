"""End-to-end pipeline on a tiny synthetic set (imgsz 64, 1 epoch per stage), its report, re-runs and config checks."""
import importlib
import json
import re
import shlex
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


def _parse(cmd: str) -> list:
    """[(tool, argparse namespace)] of each command in a ' && ' chain, parsed by the tool's own parser;
    ("python -c", code) for a python line (its code must compile)."""
    from yolo_prune.flags import PARSERS

    chains = [[]]
    for token in shlex.split(cmd):
        chains.append([]) if token == "&&" else chains[-1].append(token)
    parsed = []
    for argv in chains:
        assert argv[0] == "python", cmd
        if argv[1] == "-c":
            compile(argv[2], "<command>", "exec")
            parsed.append(("python -c", argv[2]))
            continue
        m = re.fullmatch(r"tools/(\w+)\.py", argv[1])
        assert m and m.group(1) in PARSERS, f"{argv[1]}: not a tool with a parser in yolo_prune/flags.py"
        try:
            parsed.append((m.group(1), PARSERS[m.group(1)]().parse_args(argv[2:])))
        except SystemExit:
            pytest.fail(f"tools/{m.group(1)}.py rejects the pipeline's command: {cmd}")
    return parsed


def test_every_stage_command_in_the_report_parses_with_its_tools_parser(tiny_run):
    out, cfg, summary = tiny_run
    commands = dict(json.loads((out / "report.json").read_text())["commands"])
    assert set(commands) == set(summary["stages"])  # every stage that ran says how to reproduce it
    parsed = {stage: _parse(cmd) for stage, cmd in commands.items()}
    assert [t for t, _ in parsed["data"]] == ["python -c"]
    (tool, prune), = parsed["prune"]
    assert tool == "prune" and Path(prune.weights) == out / STAGE_DIRS["sparse"] / "sparse.pt"
    assert prune.target_macs == cfg["target_macs"] and prune.round_to == cfg["round_to"]
    assert Path(prune.out) == out / STAGE_DIRS["prune"] / "pruned.pt"
    (tool, ft), = parsed["finetune"]
    assert tool == "finetune" and ft.epochs == 1 and Path(ft.weights) == out / STAGE_DIRS["prune"] / "pruned.pt"
    assert [Path(ns.out).name for _, ns in parsed["export"]] == ["baseline.onnx", "final.onnx"]
    (tool, ev), = parsed["eval_pruned"]
    assert tool == "eval_coco" and Path(ev.out) == out / STAGE_DIRS["eval_pruned"] and ev.imgsz == 64


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
    with pytest.raises(ValueError, match="pipeline config: macs_exponent: expected -1 <= exponent <= 2 or 'search', "
                                         "found 'fast'"):
        resolve_config(None, {"macs_exponent": "fast"})
    with pytest.raises(ValueError, match="macs_exponent 0.1: weighs channels by the MACs they save, so it needs"):
        resolve_config(layer, {"macs_exponent": 0.1})  # the yaml's target is a ratio


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


class _AnyOutput:
    """Stands in for a finished stage: every output key names a file in its folder."""

    def __init__(self, name, folder):
        self.name, self.folder, self.token, self.outputs, self.result = name, folder, "t", {}, {"epochs": 3}

    def out(self, key):
        return self.folder / f"{key}.out"


def _stage_commands(cfg: dict, tmp_path: Path) -> dict:
    """{stage: command} of every stage ``cfg`` runs, written from stand-in upstream results (nothing is trained)."""
    from yolo_prune.pipeline.context import Context
    from yolo_prune.pipeline.run import STAGES, register_given_models

    ctx = Context(cfg, tmp_path / "run", "cpu", False)
    ctx.data, ctx.nc, ctx.class_names = tmp_path / "data.yaml", 3, {0: "a", 1: "b", 2: "c"}
    register_given_models(ctx)
    commands = {}
    for stage in STAGES:
        transfer = stage.name == "transfer" and cfg["weights"] is not None  # run when the class count differs
        if stage.name == "report" or not (stage.planned(cfg) or transfer):
            continue
        commands[stage.name] = stage.command(ctx)
        assert {tool for tool, _ in _parse(commands[stage.name])} == {stage.tool or "python -c"}, stage.name
        res = _AnyOutput(stage.name, stage.folder(ctx))
        ctx.stages[stage.name] = res
        for role, key in stage.provides.items():
            ctx.models[role] = (res, key)
    return commands


def test_stage_commands_parse_and_carry_the_config_for_every_branch(tmp_path):
    """The reproduce-commands of branches the tiny run does not take (given weights, ratio / threshold /
    target_latency, compensate off / reconstruct, taylor, quantize, plain arms) parse and say what the stage does."""
    from yolo_prune.pipeline.config import resolve_auto

    for name in ("w.pt", "plain.pt", "data.yaml"):
        (tmp_path / name).write_text("x")
    given = {"weights": str(tmp_path / "w.pt"), "data": str(tmp_path / "data.yaml")}
    branches = [
        {},  # the demo: synthetic data, baseline trained from the yaml
        {**given, "ratio": 0.3, "local": True, "ignore": ["model.0.*", "a b"], "compensate": "off", "quantize": True,
         "plain_arm": "train", "threads": 2, "eval_max_images": 5, "epochs_sparse": 2, "sparsity": "l1"},
        {**given, "threshold": 0.01, "criterion": "taylor", "compensate": "reconstruct",
         "plain_arm": str(tmp_path / "plain.pt"), "finetune_distill": 0.2, "finetune_distill_features": 0.5},
        {**given, "target_latency": 0.6, "latency_backend": "ort-cpu", "latency_threads": 3, "epochs_finetune": 0},
        {**given, "macs_exponent": "search"},  # the user's model, the default MACs target, reconstruct
    ]
    for overrides in branches:
        cfg, _ = resolve_auto(resolve_config(None, overrides), 100)
        commands = _stage_commands(cfg, tmp_path)
        parsed = {stage: _parse(cmd) for stage, cmd in commands.items()}
        (_, prune), = parsed["prune"]
        target = next(k for k in ("target_macs", "ratio", "threshold", "target_latency") if cfg[k] is not None)
        assert getattr(prune, target) == cfg[target], commands["prune"]
        assert prune.criterion == cfg["criterion"] and prune.local == cfg["local"] and prune.ignore == cfg["ignore"]
        assert prune.no_compensate == (cfg["compensate"] == "off")
        assert prune.round_to == (None if target == "target_latency" else cfg["round_to"])
        if target == "target_latency":
            assert prune.backend == cfg["latency_backend"] and prune.threads == cfg["latency_threads"]
        assert (prune.calib is not None) == (cfg["compensate"] == "reconstruct")
        weighs_macs = target in ("target_macs", "target_latency")
        assert prune.macs_exponent == (cfg["macs_exponent"] if weighs_macs else None)
        assert (prune.data is not None) == (cfg["criterion"] == "taylor")
        for stage in ("sparse", "finetune", "plain"):
            if stage in parsed:
                (_, train), = parsed[stage]
                assert train.epochs == cfg["plain_arm_epochs" if stage == "plain" else f"epochs_{stage}"]
                assert all("=" in item for item in train.set)
                # the baseline teaches, unless a class-count transfer gave it a new, untrained class head
                distilled = stage == "finetune" and cfg["finetune_distill"] > 0 and "transfer" not in parsed
                assert (train.teacher is not None) == distilled
                if distilled:
                    (_, base), = parsed["eval_baseline"]
                    assert train.distill_weight == cfg["finetune_distill"] and train.teacher == base.weights
                    assert train.distill_features == (cfg["finetune_distill_features"] or None)
        (_, bench), = parsed["benchmark"]
        assert len(bench.weights) == (3 if cfg["quantize"] else 2)
        (_, ev), = parsed["eval_baseline"]
        assert ev.max_images == cfg["eval_max_images"]
        assert ("eval_plain" in parsed) == (cfg["plain_arm"] is not None)
        assert ("transfer" in parsed) == (cfg["weights"] is not None)


def test_a_flag_the_tool_does_not_have_is_refused():
    from yolo_prune.pipeline.commands import tool_command

    assert tool_command("prune", {"weights": "a.pt", "ratio": 0.5, "local": True, "out": "p.pt"}) == \
        "python tools/prune.py --weights a.pt --ratio 0.5 --local --out p.pt"
    with pytest.raises(KeyError, match="tools/prune.py has no flag for 'target_flops'"):
        tool_command("prune", {"weights": "a.pt", "target_flops": 0.5})


@pytest.mark.parametrize("tool", ["prune", "sparse_train", "finetune", "eval_coco", "export_onnx", "quantize",
                                  "benchmark"])
def test_each_tool_parses_with_the_parser_the_pipeline_writes_commands_with(tool, capsys):
    from yolo_prune.flags import PARSERS

    module = importlib.import_module(f"yolo_prune.commands.{tool}")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert capsys.readouterr().out == PARSERS[tool](module.__doc__).format_help()


def test_the_baseline_teaches_the_fine_tune_only_when_its_head_is_trained():
    from types import SimpleNamespace

    from yolo_prune.pipeline.stages import Finetune

    ctx = SimpleNamespace(cfg={"finetune_distill": 0.2}, stages={}, model_path=lambda role: Path(f"{role}.pt"))
    assert Finetune.teacher(ctx) == Path("baseline.pt")
    ctx.stages["transfer"] = SimpleNamespace(skipped=False, result={"nc": 3})  # new, untrained class head
    assert Finetune.teacher(ctx) is None
    ctx.stages.clear()
    ctx.cfg["finetune_distill"] = 0
    assert Finetune.teacher(ctx) is None


def test_feature_distillation_reaches_the_fine_tune_command_with_its_teacher(tmp_path):
    from yolo_prune.pipeline.config import resolve_auto
    from yolo_prune.pipeline.context import Context
    from yolo_prune.pipeline.run import register_given_models
    from yolo_prune.pipeline.stages import Finetune, PlainArm

    for name in ("w.pt", "data.yaml"):
        (tmp_path / name).write_text("x")
    given = {"weights": str(tmp_path / "w.pt"), "data": str(tmp_path / "data.yaml"), "finetune_distill": 0.2}
    for features in (0.5, 0.0):
        cfg, _ = resolve_auto(resolve_config(None, {**given, "finetune_distill_features": features}), 100)
        ctx = Context(cfg, tmp_path / "run", "cpu", False)
        ctx.data, ctx.nc, ctx.class_names = tmp_path / "data.yaml", 3, {0: "a", 1: "b", 2: "c"}
        register_given_models(ctx)  # no transfer stage: the baseline is the user's model as trained
        ctx.models["pruned"] = (_AnyOutput("prune", tmp_path / "p"), "pruned")
        (_, train), = _parse(Finetune().command(ctx))
        assert train.teacher is not None and train.distill_weight == 0.2
        assert train.distill_features == (features or None)
        assert Finetune().overrides(ctx).get("distill_features") == (features or None)
        # after the reconstruct cut the pruned model trains at 3x the rate the plain arm keeps
        assert Finetune().overrides(ctx)["lr0"] == 0.01 and PlainArm().overrides(ctx)["lr0"] == 0.00334
    with pytest.raises(ValueError, match="finetune_distill_features': expected a weight >= 0"):
        resolve_config(None, {**given, "finetune_distill_features": -1})
