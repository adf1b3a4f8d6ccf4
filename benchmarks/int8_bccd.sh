#!/usr/bin/env bash
# Issue 14 part 2 on real data: INT8 (QDQ) on top of the pruned BCCD yolov5n of the pipeline (issue 11), at 320.
#   PYTHON=.venv/bin/python bash benchmarks/int8_bccd.sh PIPELINE_OUT [OUT]     e.g. runs/bench/pipe_lr01 (needs its 7_export/*.onnx)
# Calibration: 32 BCCD trainval images; mAP: pycocotools on BCCD test; latency: ORT-CPU, batch 1, 1 and 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?pipeline output folder}
OUT=${2:-runs/bench/int8_bccd}
PY=${PYTHON:-python}
# the data yaml of the pipeline's own VOC conversion (its report's eval command), else the VOC root itself
DATA=${DATA:-$(grep -o -- '--data [^ ]*' "$RUN/report.md" | head -n1 | cut -d' ' -f2)}
DATA=${DATA:-${YOLO_PRUNE_SHARED:-../shared}/bccd}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/log.txt"; }
run() { log "$*"; { "$@" 2>&1 || echo "FAILED (exit $?): $*"; } | { grep -v Warning || true; } | tee -a "$OUT/log.txt" | tail -n 25; }
for m in baseline final; do
    run $PY tools/quantize.py --weights "$RUN/7_export/$m.onnx" --calib "$DATA" --calib-images 32 \
        --sensitivity-images 4 --keep-fp32 auto --per-channel --threads 1 --out "$OUT/$m.int8.onnx"
done
for t in 1 2; do
    run $PY tools/benchmark.py --weights "$RUN/7_export/baseline.onnx" "$RUN/7_export/final.onnx" \
        "$OUT/baseline.int8.onnx" "$OUT/final.int8.onnx" --imgsz 320 --batch 1 --runs 100 --warmup 10 \
        --backends ort-cpu --threads $t --op-profile --out "$OUT/bench_t$t"
done
for m in baseline.int8 final.int8; do
    run $PY tools/eval_coco.py --weights "$OUT/$m.onnx" --data "$DATA" --imgsz 320 --batch 1 --out "$OUT/eval_$m"
done
