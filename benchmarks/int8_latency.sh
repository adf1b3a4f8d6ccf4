#!/usr/bin/env bash
# Issue 14 figures on this CPU (ORT-CPU, 1 thread, batch 1, 640): latency-targeted pruning vs --target-macs 0.5
# --round-to 16 for yolov5n and yolov8n, and INT8 (QDQ) on top of the pruned and the unpruned yolov5n.
#   flock /tmp/yolo_prune_cpu.lock bash benchmarks/int8_latency.sh [OUT]      (python: $PYTHON, default python)
#   PARTS="2" runs only the latency-targeted part (default "1 1b 2": all of it)
# Writes OUT/log.txt and every tool's own output; timings are compared as ratios within one benchmark run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench/int8_latency}
PY=${PYTHON:-python}
S=${YOLO_PRUNE_SHARED:-../shared}
PARTS=" ${PARTS:-1 1b 2} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
mkdir -p "$OUT"
P="$OUT/models"; mkdir -p "$P"
log() { echo "== $*" | tee -a "$OUT/log.txt"; }
# a failed step is logged and the next one runs (each part is useful alone)
run() { log "$*"; { "$@" 2>&1 || echo "FAILED (exit $?): $*"; } | { grep -v Warning || true; } | tee -a "$OUT/log.txt" | tail -n 25; }

# ===== part 1: INT8 on top of the 0.5x MACs yolov5n (and of the unpruned one) =====
if part 1; then
run $PY tools/prune.py --weights "$S/weights/yolov5n.pt" --target-macs 0.5 --round-to 16 --imgsz 640 --out "$P/v5n_m50_r16.pt"
run $PY tools/export_onnx.py --weights "$S/weights/yolov5n.pt" --imgsz 640 --out "$P/v5n.onnx"
run $PY tools/export_onnx.py --weights "$P/v5n_m50_r16.pt" --imgsz 640 --out "$P/v5n_m50_r16.onnx"
for m in v5n_m50_r16 v5n; do   # calibration on 32 coco128 train images, measured sensitivity + latency passes
    run $PY tools/quantize.py --weights "$P/$m.onnx" --calib "$S/coco128/images/train2017" --calib-images 32 \
        --sensitivity-images 4 --keep-fp32 auto --per-channel --threads 1 --out "$P/$m.int8.onnx"
done
run $PY tools/benchmark.py --weights "$P/v5n.onnx" "$P/v5n_m50_r16.onnx" "$P/v5n.int8.onnx" "$P/v5n_m50_r16.int8.onnx" \
    --imgsz 640 --batch 1 --runs 40 --warmup 5 --backends ort-cpu --threads 1 --op-profile --out "$OUT/bench_int8"
for m in v5n v5n.int8 v5n_m50_r16 v5n_m50_r16.int8; do   # mAP, coco128 val2017, 640, pycocotools
    run $PY tools/eval_coco.py --weights "$P/$m.onnx" --images "$S/coco128/images/val2017" \
        --ann "$S/coco128/annotations/instances_val2017.json" --imgsz 640 --batch 1 --out "$OUT/eval_$m"
done
fi

# ===== part 1b: benchmarks/gpu_check.sh end to end at toy sizes (on this CPU every GPU backend is skipped) =====
if part 1b && [ "${GPU_CHECK_SMOKE:-1}" = 1 ]; then
    log "gpu_check.sh smoke run"
    PYTHON=$PY IMGSZ=64 BATCHES=1 RUNS=3 WARMUP=1 LAT_TARGET=0.7 CALIB="$S/coco128/images/val2017" \
        bash benchmarks/gpu_check.sh "$OUT/gpu_check_smoke" >> "$OUT/log.txt" 2>&1 || log "gpu_check.sh FAILED"
fi

# ===== part 2: latency-targeted pruning vs --target-macs 0.5 --round-to 16 =====
part 2 || exit 0
if [ ! -f "$P/v5n_m50_r16.pt" ]; then   # part 1's pruned and unpruned yolov5n, needed for the comparison
    run $PY tools/prune.py --weights "$S/weights/yolov5n.pt" --target-macs 0.5 --round-to 16 --imgsz 640 --out "$P/v5n_m50_r16.pt"
    run $PY tools/export_onnx.py --weights "$S/weights/yolov5n.pt" --imgsz 640 --out "$P/v5n.onnx"
    run $PY tools/export_onnx.py --weights "$P/v5n_m50_r16.pt" --imgsz 640 --out "$P/v5n_m50_r16.onnx"
fi
run $PY tools/prune.py --weights "$S/weights/yolov5n.pt" --target-latency 0.5 --backend ort-cpu --threads 1 --imgsz 640 \
    --latency-cache "$OUT/latency_cache" --out "$P/v5n_lat50.pt"
run $PY tools/prune.py --weights yolov8n.yaml --criterion l1 --target-macs 0.5 --round-to 16 --imgsz 640 --out "$P/v8n_m50_r16.pt"
run $PY tools/prune.py --weights yolov8n.yaml --criterion l1 --target-latency 0.5 --backend ort-cpu --threads 1 --imgsz 640 \
    --latency-cache "$OUT/latency_cache" --out "$P/v8n_lat50.pt"
# the same measured latency as today's best (--target-macs 0.5 --round-to 16 measured 0.567-0.574 in the
# latency section above): which keeps more importance?
for fam in v5n v8n; do
    if [ $fam = v5n ]; then W="$S/weights/yolov5n.pt"; C=bn; else W=yolov8n.yaml; C=l1; fi
    run $PY tools/prune.py --weights "$W" --criterion $C --target-latency 0.57 --backend ort-cpu --threads 1 \
        --imgsz 640 --latency-cache "$OUT/latency_cache" --out "$P/${fam}_lat57.pt"
done
run $PY tools/export_onnx.py --weights yolov8n.yaml --imgsz 640 --out "$P/v8n.onnx"
for m in v5n_lat50 v5n_lat57 v8n_m50_r16 v8n_lat50 v8n_lat57; do
    run $PY tools/export_onnx.py --weights "$P/$m.pt" --imgsz 640 --out "$P/$m.onnx"
done
run $PY tools/benchmark.py --weights "$P/v5n.onnx" "$P/v5n_m50_r16.onnx" "$P/v5n_lat50.onnx" "$P/v5n_lat57.onnx" \
    "$P/v8n.onnx" "$P/v8n_m50_r16.onnx" "$P/v8n_lat50.onnx" "$P/v8n_lat57.onnx" --imgsz 640 --batch 1 --runs 40 --warmup 5 --backends ort-cpu \
    --threads 1 --out "$OUT/bench_latency"
log "done: $OUT/bench_int8/bench.md, ops.md, eval_*/metrics.json, bench_latency/bench.md, models/*.json"
