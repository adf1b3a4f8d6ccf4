"""Property-based fuzzing (hypothesis) of the four readers of user files: a few hundred inputs each here, 10,000+
in benchmarks/fuzz.py. Only the project's own error types (ValueError subclasses) may escape."""
from __future__ import annotations

import shutil

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

import fuzz_targets as F  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.fixture(autouse=True)
def small_limits(monkeypatch):
    for k, v in F.FUZZ_ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="module")
def workdir():
    d = F.workdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _run(target, *args):
    try:
        target(*args)
    except F.ALLOWED:
        pass


@settings(max_examples=200, **SETTINGS)
@given(F.cfg_strategy())
def test_fuzz_darknet_cfg(text):
    _run(F.cfg_target, text)


@settings(max_examples=200, **SETTINGS)
@given(F.yaml_strategy())
def test_fuzz_model_yaml(d):
    _run(F.yaml_target, d)


@settings(max_examples=100, **SETTINGS)
@given(F.specs())
def test_fuzz_spec(spec):
    _run(F.spec_target, spec)


@settings(max_examples=200, **SETTINGS)
@given(data=F.label_files())
def test_fuzz_yolo_labels(data, workdir):
    _run(F.label_target, data, workdir)


@settings(max_examples=200, **SETTINGS)
@given(d=F.coco_dicts())
def test_fuzz_coco_json(d, workdir):
    _run(F.coco_target, d, workdir)
