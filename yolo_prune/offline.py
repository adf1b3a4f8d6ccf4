"""Keep ultralytics offline and away from the user's home directory."""
import os
import tempfile

# ultralytics writes settings.json under YOLO_CONFIG_DIR at import; give it a throwaway folder
if "YOLO_CONFIG_DIR" not in os.environ:
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="yolo_prune_ultra_")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
