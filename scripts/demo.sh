#!/usr/bin/env bash
# The demo: synthetic data -> baseline yolov8n -> sparse training -> prune to ~0.5x MACs -> fine-tune -> eval ->
# ONNX export -> latency benchmark -> runs/demo/report.md. Extra arguments go to tools/pipeline.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
VENV="${YOLO_PRUNE_VENV:-.venv}"
exec "$VENV/bin/python" tools/pipeline.py "$@"
