"""The package: wheel contents, console entry point, defaults as package data, import sets nothing, tools offline."""
import ast
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from yolo_prune import cli

ROOT = Path(__file__).resolve().parents[1]

NO_NETWORK = """
import socket
calls = []
def refuse(*a, **k):
    calls.append(a)
    raise OSError("network disabled by test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
socket.create_connection = refuse
"""


def _new_temp_files(tmp_path):
    """What appeared in TMPDIR, less torch's own inductor cache folder and onnxruntime's telemetry session file
    (``.ses``, written by onnxruntime's native library, like its device id under ~/.cache/Microsoft)."""
    return [p for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("torchinductor_") and p.name != ".ses"]


def _clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("YOLO_CONFIG_DIR", "XDG_CONFIG_HOME", "YOLO_OFFLINE", "YOLO_VERBOSE", "MPLCONFIGDIR")}
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(ROOT))
    return env


def test_wheel_holds_defaults_commands_and_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("yolo_prune-*.whl")
    z = zipfile.ZipFile(wheel)
    names = set(z.namelist())
    for f in ("yolo_prune/defaults/train.yaml", "yolo_prune/defaults/pipeline.yaml", "yolo_prune/cli.py",
              "yolo_prune/integrations/ultralytics.py", "yolo_prune/export/layouts.py"):
        assert f in names, f
    for module, _ in cli.COMMANDS.values():  # each command's code is in the wheel, as content (not a link)
        assert z.read(f"yolo_prune/commands/{module}.py") == (ROOT / "yolo_prune/commands" / f"{module}.py").read_bytes()
    assert z.read("yolo_prune/defaults/train.yaml") == (ROOT / "yolo_prune/defaults/train.yaml").read_bytes()
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "yolo-prune = yolo_prune.cli:main" in z.read(entry).decode()
    assert not any(n.startswith(("tests/", "tools/", "cfg/", "docs/")) for n in names)


def test_defaults_are_package_data():
    from yolo_prune import defaults
    from yolo_prune.pipeline import DEFAULTS_FILE as PIPELINE
    from yolo_prune.train.config import DEFAULTS_FILE as TRAIN, load_defaults

    for p in (TRAIN, PIPELINE):
        assert p.parent == ROOT / "yolo_prune" / "defaults" and p.is_file()
    assert load_defaults()["epochs"] >= 1 and "lr0" in load_defaults()
    with pytest.raises(ValueError, match="unknown defaults file"):
        defaults.read_text("../../etc/passwd")


def test_cli_dispatch_and_errors(capsys):
    assert cli.main(["prun"]) == 2
    assert "did you mean prune" in capsys.readouterr().err
    assert cli.main([]) == 2 and cli.main(["--help"]) == 0
    assert cli.main(["export", "--help"]) == 0
    assert "--layout" in capsys.readouterr().out
    assert cli.main(["finetune", "--engine", "nope"]) == 2  # argparse's own exit code comes through


def test_import_sets_nothing(tmp_path):
    """Importing every subpackage changes no environment variable, writes no file, imports no ultralytics."""
    code = textwrap.dedent("""
        import os, sys
        import cv2, torch, torch._dynamo  # third-party imports set variables of their own (Qt paths, inductor cache)
        before = dict(os.environ)
        import yolo_prune, yolo_prune.models, yolo_prune.train, yolo_prune.prune, yolo_prune.eval
        import yolo_prune.export, yolo_prune.pipeline, yolo_prune.data.yolo, yolo_prune.cli
        assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
        assert "ultralytics" not in sys.modules
        from yolo_prune import offline
        assert not offline.applied()
        print("ok")
    """)
    env = _clean_env(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
    assert list((tmp_path / "home").rglob("*")) == [] and _new_temp_files(tmp_path) == []


def test_tools_and_entry_point_make_no_network_calls(tmp_path):
    """tools/prune.py as a script and `yolo-prune export` through the entry point: 0 socket calls, HOME empty."""
    code = NO_NETWORK + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["tools/prune.py", "--weights", "yolov8n.yaml", "--ratio", "0.3", "--imgsz", "64",
                    "--out", "p/p.pt"]
        runpy.run_path({str(ROOT / "tools" / "prune.py")!r}, run_name="__main__")
        from yolo_prune import cli
        assert cli.main(["export", "--weights", "p/p.pt", "--imgsz", "64", "--out", "p/p.onnx"]) == 0
        print("calls", len(calls))
    """)
    env = _clean_env(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "calls 0" in out.stdout, out.stdout[-2000:]
    for f in ("p/p.pt", "p/p.json", "p/p.ultralytics.pt", "p/p.onnx", "p/p.onnx.json"):
        assert (tmp_path / f).is_file(), f
    # nothing of ultralytics or matplotlib in HOME (the ONNX export path leaves a Microsoft DeveloperTools device
    # id under ~/.cache/Microsoft, written by Microsoft's onnx tooling, not by us)
    home = [p.relative_to(tmp_path / "home").parts for p in (tmp_path / "home").rglob("*")]
    assert all(parts == (".cache",) or parts[:2] == (".cache", "Microsoft") for parts in home), home
    assert _new_temp_files(tmp_path) == []  # the private ultralytics config dir was removed at exit


@pytest.mark.parametrize("module", sorted(m for m, _ in cli.COMMANDS.values()))
def test_each_tool_in_tools_only_launches_its_command_module(module):
    """tools/X.py holds no code of its own: imported, its main is the command module's; run, it runs that module,
    so a checkout and an installed yolo-prune cannot drift apart."""
    import importlib
    import importlib.util

    path = ROOT / "tools" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"launcher_{module}", path)
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    assert launcher.main is importlib.import_module(f"yolo_prune.commands.{module}").main
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree)
    code = [ln.strip() for ln in ast.unparse(ast.Module(tree.body[1:], [])).splitlines()]  # past the docstring
    assert code == ["import runpy", "if __name__ == '__main__':",
                    f"runpy.run_module('yolo_prune.commands.{module}', run_name='__main__', alter_sys=True)",
                    "else:", f"from yolo_prune.commands.{module} import main"], code


def test_a_tool_run_from_the_checkout_is_its_command_module(capsys):
    """python tools/prune.py prints the command module's help (its docstring, its flags) and exit codes."""
    from yolo_prune.commands import prune

    run = subprocess.run([sys.executable, "tools/prune.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-1500:]
    with pytest.raises(SystemExit) as e:
        prune.main(["--help"])
    assert e.value.code == 0
    in_process = capsys.readouterr().out
    # past the usage block (its wrapping depends on the program name): description and flags are the module's
    assert run.stdout.split("\n\n", 1)[1] == in_process.split("\n\n", 1)[1]
    assert prune.__doc__.strip().splitlines()[0] in run.stdout
    bad = subprocess.run([sys.executable, "tools/prune.py", "--weights", "absent.pt", "--ratio", "0.5", "--out",
                          "unused.pt"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "absent.pt" in bad.stderr and not (ROOT / "unused.pt").exists()
