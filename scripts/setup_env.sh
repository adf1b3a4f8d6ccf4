#!/usr/bin/env bash
# Create or reuse the project venv (.venv, or $YOLO_PRUNE_VENV) with the pinned packages, then install
# yolo_prune into it in editable mode. Re-runs are instant unless pyproject.toml or requirements.lock changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${YOLO_PRUNE_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.yolo_prune-$(cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "installing pinned dependencies into $VENV (torch 2.14.1 / torchvision 0.29.1 first)"
  "$VENV/bin/python" -m pip install -q --upgrade pip "setuptools>=64"
  "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
  "$VENV/bin/python" -m pip install -q -r requirements.lock
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  rm -f "$VENV"/.yolo_prune-*
  touch "$stamp"
fi
