"""predict(): detections in original coordinates; predict.py writes annotated images."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from test_eval import BrightBox
from yolo_prune.eval.infer import draw_detections, predict, predict_to_images

ROOT = Path(__file__).resolve().parents[1]


def _images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    a = np.zeros((96, 160, 3), np.uint8)
    a[20:60, 40:100] = 255
    cv2.imwrite(str(folder / "a.png"), a)
    b = np.full((120, 80), 30, np.uint8)  # grayscale, nothing white
    cv2.imwrite(str(folder / "b.png"), b)
    return folder


def test_predict_returns_boxes_in_original_pixels(tmp_path):
    src = _images(tmp_path / "src")
    results, names = predict(BrightBox({0: "box"}), src, imgsz=64, conf=0.25)
    assert names == {0: "box"}
    a, b = results[str(src / "a.png")], results[str(src / "b.png")]
    assert len(b) == 0 and len(a) == 1
    assert a[0, :4].tolist() == pytest.approx([40, 20, 100, 60], abs=3)
    assert a[0, 4].item() == pytest.approx(0.9)


def test_draw_detections_marks_the_box():
    img = np.zeros((64, 64, 3), np.uint8)
    out = draw_detections(img, torch.tensor([[10.0, 20, 50, 60, 0.8, 0]]), {0: "box"})
    assert out[40, 10].any() and out[40, 50].any()  # left and right edges drawn
    assert not out[40, 30].any()  # inside stays untouched
    assert not img.any()  # input not modified


def test_predict_to_images_writes_one_image_per_source(tmp_path):
    src = _images(tmp_path / "src")
    written = predict_to_images(BrightBox({0: "box"}), src, tmp_path / "out", imgsz=64)
    assert sorted(p.name for p, _ in written) == ["a.png", "b.png"]
    assert dict((p.name, n) for p, n in written) == {"a.png": 1, "b.png": 0}
    drawn = cv2.imread(str(tmp_path / "out" / "a.png"))
    assert drawn.shape == (96, 160, 3)
    assert not np.array_equal(drawn, cv2.imread(str(src / "a.png")))


def test_predict_tool_runs_as_a_script(tmp_path):
    src = _images(tmp_path / "src")
    res = subprocess.run([sys.executable, "tools/predict.py", "--weights", "cfg/yolov4-tiny.cfg", "--source",
                          str(src), "--imgsz", "64", "--conf", "0.5", "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "2 image(s) written" in res.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


def test_predict_tool_missing_source_is_a_clear_error(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_tool", ROOT / "tools" / "predict.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rc = tool.main(["--weights", str(ROOT / "cfg" / "yolov4-tiny.cfg"), "--source", str(tmp_path / "nope"),
                    "--out", str(tmp_path / "o2")])
    assert rc == 2 and "nope" in capsys.readouterr().err
