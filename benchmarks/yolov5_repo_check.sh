#!/usr/bin/env bash
# Check that X.yolov5.pt (yolo_prune.models.yolov5_legacy.save_yolov5_pt) runs unchanged in the yolov5 repo:
# val.py on the unpruned yolov5n written by us must match the official file; the pruned one must load at its
# pruned widths in val.py, detect.py and export.py. Offline: no pip installs, no font or weight downloads.
#
#   bash benchmarks/yolov5_repo_check.sh YOLOV5_CHECKOUT SHARED_DIR OUT
# YOLOV5_CHECKOUT: a plain checkout of github.com/ultralytics/yolov5 (checked: master v7.0-549-g5081342f).
# The yolov5 repo needs pandas, seaborn, scipy and gitpython, which yolo_prune does not: put them in a separate
# folder (pip install --target DEPS --no-deps pandas seaborn scipy gitpython gitdb smmap tzdata python-dateutil
# six pytz) and pass it as DEPS=... (default /tmp/v5deps).
set -euo pipefail
V5=$(cd "$1" && pwd); SHARED=$(cd "$2" && pwd); OUT=$(mkdir -p "$3" && cd "$3" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python}
DEPS=${DEPS:-/tmp/v5deps}
mkdir -p "$OUT/val" "$OUT/cfg"
# 8 coco128 val images with their labels
for f in $(ls "$SHARED/coco128/images/val2017" | head -8); do
  cp "$SHARED/coco128/images/val2017/$f" "$OUT/val/"; cp "$SHARED/coco128/labels/val2017/${f%.*}.txt" "$OUT/val/" || true
done
mkdir -p "$OUT/data/images" "$OUT/data/labels" && mv "$OUT"/val/*.jpg "$OUT/data/images/" && mv "$OUT"/val/*.txt "$OUT/data/labels/"
PYTHONPATH="$ROOT" "$PY" - "$SHARED" "$OUT" <<'PYEOF'
import sys, yaml
from yolo_prune.models import load
from yolo_prune.models.yolov5_legacy import save_yolov5_pt
from yolo_prune.prune import prune_model
shared, out = sys.argv[1], sys.argv[2]
names = yaml.safe_load(open(f"{shared}/coco128/data.yaml"))["names"]
yaml.safe_dump({"path": f"{out}/data", "train": "images", "val": "images", "nc": 80, "names": names},
               open(f"{out}/data.yaml", "w"))
det = load(f"{shared}/weights/yolov5n.pt")
save_yolov5_pt(det, f"{out}/full.yolov5.pt")
prune_model(det, ratio=0.3, imgsz=64)
save_yolov5_pt(det.eval(), f"{out}/p30.yolov5.pt")
assert sum(p.numel() for p in load(f"{out}/p30.yolov5.pt").parameters()) == sum(p.numel() for p in det.parameters())
print("params pruned", sum(p.numel() for p in det.parameters()))
PYEOF
# yolov5 fetches Arial.ttf into its config dir unless it is there: give it matplotlib's DejaVuSans under that name
cp "$("$PY" -c 'import matplotlib, os; print(os.path.join(matplotlib.get_data_path(), "fonts/ttf/DejaVuSans.ttf"))')" "$OUT/cfg/Arial.ttf"
export PYTHONPATH="$DEPS" YOLOv5_AUTOINSTALL=false YOLOV5_CONFIG_DIR="$OUT/cfg" YOLO_OFFLINE=1
cd "$V5"
for w in "$SHARED/weights/yolov5n.pt" "$OUT/full.yolov5.pt" "$OUT/p30.yolov5.pt"; do
  echo "== val.py $w"
  "$PY" val.py --weights "$w" --data "$OUT/data.yaml" --imgsz 320 --batch 8 --device cpu --project "$OUT/runs" \
      --name val --exist-ok 2>&1 | grep -E "summary|  all"
done
"$PY" detect.py --weights "$OUT/p30.yolov5.pt" --source "$OUT/data/images" --imgsz 320 --device cpu \
    --project "$OUT/runs" --name det --exist-ok 2>&1 | tail -2
"$PY" export.py --weights "$OUT/p30.yolov5.pt" --include onnx torchscript --imgsz 320 --device cpu 2>&1 | grep -E "export success|Export complete"
echo "== yolov5's attempt_load vs yolo_prune's Detector on the pruned file (same random input, no fuse)"
PYTHONPATH="$DEPS:$V5:$ROOT" "$PY" - "$OUT/p30.yolov5.pt" <<'PYEOF'
import sys, torch
from models.experimental import attempt_load  # the yolov5 repo's own loader
from yolo_prune.models import load
theirs = attempt_load(sys.argv[1], device="cpu", fuse=False).eval()
ours = load(sys.argv[1])
x = torch.rand(2, 3, 320, 256)
with torch.no_grad():
    a = theirs(x)[0]
    b = ours(x)
obj_cls = torch.cat([a[..., :4], a[..., 5:] * a[..., 4:5]], -1)  # yolov5: obj and cls apart; ours: their product
print("max abs diff", float((obj_cls - b).abs().max()), "shapes", tuple(a.shape), tuple(b.shape))
assert torch.allclose(obj_cls, b, atol=1e-4)
PYEOF
