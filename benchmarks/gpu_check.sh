#!/usr/bin/env bash
# GPU check (issue 14): unpruned / pruned 0.5x MACs / latency-targeted 0.5 / INT8 variants of yolov5n and yolov8n,
# timed with torch-cuda, ort-cuda, ort-trt fp16 and ort-trt int8 at batch 1 and 16; one markdown table.
#   bash benchmarks/gpu_check.sh [OUT]          (PYTHON=.venv/bin/python; installs nothing)
# On a machine without an NVIDIA GPU it runs end to end: the GPU backends are skipped with their reason and the
# table holds ort-cpu rows instead. Sizes for a quick run: IMGSZ=64 BATCHES="1 2" RUNS=3 WARMUP=1.
# Budget <= 8 min on a GPU box: the latency-targeted prune measures on ort-cuda (ort-cpu without a GPU) at one
# channel multiple (LAT_ROUND_TO, default 16) so its search is ~12 probes; TensorRT engines are built once per
# model x batch x precision.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-python}
S=${YOLO_PRUNE_SHARED:-../shared}
IMGSZ=${IMGSZ:-640}
BATCHES=${BATCHES:-1 16}
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-10}
LAT_ROUND_TO=${LAT_ROUND_TO:-16}
LAT_TARGET=${LAT_TARGET:-0.5}   # toy sizes: fixed overheads dominate, use e.g. 0.7
CALIB=${CALIB:-$S/coco128/images/train2017}
V5=${V5_WEIGHTS:-$S/weights/yolov5n.pt}
M="$OUT/models"
mkdir -p "$M"
START=$(date +%s)
log() { echo "== [$(( $(date +%s) - START )) s] $*" | tee -a "$OUT/log.txt"; }
GPU=$($PY -c "import torch; print(int(torch.cuda.is_available()))")
if [ "$GPU" = 1 ]; then LAT_BACKEND=ort-cuda; BACKENDS="torch-cuda ort-cuda ort-trt"; else
    LAT_BACKEND=ort-cpu; BACKENDS="torch-cuda ort-cuda ort-trt ort-cpu"; fi
log "gpu=$GPU imgsz=$IMGSZ batches=$BATCHES backends=$BACKENDS latency backend=$LAT_BACKEND"

variants=()
for fam in v5n v8n; do
    if [ $fam = v5n ]; then W=$V5; CRIT=bn; else W=yolov8n.yaml; CRIT=l1; fi   # no pretrained v8n offline: l1
    log "prune $fam"
    $PY tools/prune.py --weights "$W" --criterion $CRIT --target-macs 0.5 --round-to 16 --imgsz "$IMGSZ" \
        --out "$M/${fam}_m50.pt" > "$OUT/prune_${fam}_m50.txt" 2>&1
    $PY tools/prune.py --weights "$W" --criterion $CRIT --target-latency "$LAT_TARGET" --backend $LAT_BACKEND \
        --threads 1 --round-to "$LAT_ROUND_TO" --imgsz "$IMGSZ" --latency-cache "$OUT/latency_cache" \
        --out "$M/${fam}_lat50.pt" > "$OUT/prune_${fam}_lat50.txt" 2>&1 \
        || log "latency-targeted prune of $fam failed: $(tail -n 1 "$OUT/prune_${fam}_lat50.txt")"
    for b in $BATCHES; do
        for v in "$fam:$W" "${fam}_m50:$M/${fam}_m50.pt" "${fam}_lat50:$M/${fam}_lat50.pt"; do
            name=${v%%:*}; src=${v#*:}
            [ "$src" = "$W" ] || [ -f "$src" ] || continue
            $PY tools/export_onnx.py --weights "$src" --imgsz "$IMGSZ" --batch "$b" --out "$M/${name}_b$b.onnx" \
                > /dev/null 2>&1
            variants+=("$M/${name}_b$b.onnx")
        done
        log "int8 (CPU QDQ) of ${fam}_m50 at batch $b"
        $PY tools/quantize.py --weights "$M/${fam}_m50_b$b.onnx" --calib "$CALIB" --calib-images 16 \
            --keep-fp32 decode --no-latency-check --out "$M/${fam}_m50_b$b.int8.onnx" > /dev/null 2>&1
        variants+=("$M/${fam}_m50_b$b.int8.onnx")
    done
done

# torch backends need the .pt files; ORT backends time the ONNX files (a static batch each)
PTS=()
for p in "$V5" "$M/v5n_m50.pt" "$M/v5n_lat50.pt" yolov8n.yaml "$M/v8n_m50.pt" "$M/v8n_lat50.pt"; do
    [ "$p" = yolov8n.yaml ] || [ -f "$p" ] && PTS+=("$p")
done
log "benchmark torch-cuda"
$PY tools/benchmark.py --weights "${PTS[@]}" --imgsz "$IMGSZ" --batch $BATCHES --runs "$RUNS" --warmup "$WARMUP" \
    --backends torch-cuda --out "$OUT/torch" > "$OUT/torch.txt" 2>&1
ORT=$(echo "$BACKENDS" | tr ' ' '\n' | grep ort | tr '\n' ' ')
for b in $BATCHES; do
    files=$(printf '%s\n' "${variants[@]}" | grep "_b$b[.]")
    log "benchmark $ORT (fp16 TensorRT) batch $b"
    $PY tools/benchmark.py --weights $files --imgsz "$IMGSZ" --batch "$b" --runs "$RUNS" --warmup "$WARMUP" \
        --backends $ORT --threads 1 --out "$OUT/ort_b$b" > "$OUT/ort_b$b.txt" 2>&1
    log "benchmark ort-trt int8 batch $b"
    $PY tools/benchmark.py --weights $(printf '%s\n' $files | grep -v int8) --imgsz "$IMGSZ" --batch "$b" \
        --runs "$RUNS" --warmup "$WARMUP" --backends ort-trt --trt-int8 --calib "$CALIB" --calib-images 16 \
        --out "$OUT/trt_int8_b$b" > "$OUT/trt_int8_b$b.txt" 2>&1
done

# one table: every ok row of every run, then every skip reason
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows, skips, env = [], set(), None
for f in sorted(out.glob("*/bench.json")):
    d = json.loads(f.read_text())
    env = env or d["environment"]
    for r in d["rows"]:
        prec = "int8" if f.parent.name.startswith("trt_int8") or ".int8" in r["model"] else (
            "fp16" if r["backend"] == "ort-trt" and d["environment"].get("trt_fp16") else "fp32")
        if r["status"] == "ok":
            rows.append((r["model"], r["backend"], prec, r["batch"], r["latency_ms_median"], r.get("macs_ratio"),
                         r.get("latency_ratio"), r.get("images_per_s")))
        else:
            skips.add(f"- {r['backend']} ({prec}): {r['reason']}")
lines = [f"GPU: {env.get('gpu') or 'none'}; CPU: {env.get('cpu')}; torch {env.get('torch')}, onnxruntime "
         f"{env.get('onnxruntime')}; {env.get('date_utc')} UTC", "",
         "| model | backend | precision | batch | median ms | MACs ratio | latency ratio | img/s |",
         "|---|---|---|---|---|---|---|---|"]
fmt = lambda v, s: "-" if v is None else format(v, s)
for m, b, p, n, ms, mr, lr, ips in sorted(rows, key=lambda r: (r[1], r[2], r[3], r[0])):
    lines.append(f"| {m} | {b} | {p} | {n} | {ms:.2f} | {fmt(mr, '.3f')} | {fmt(lr, '.3f')} | {fmt(ips, '.1f')} |")
lines += ["", *sorted(skips)]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
log "wrote $OUT/gpu_check.md"
