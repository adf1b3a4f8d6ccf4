"""Keep ultralytics offline and away from the user's home directory.

Must run before ultralytics is imported: ultralytics reads these variables once, at import. It writes a
settings.json under YOLO_CONFIG_DIR on import, so unless the user chose a folder we give it a private temporary
one and remove it when the process ends. YOLO_OFFLINE=1 makes ultralytics' online check report offline without
touching the network, which disables its analytics events, update checks and auto-installs.
"""
import atexit
import os
import shutil
import tempfile

if "YOLO_CONFIG_DIR" not in os.environ:
    _config_dir = tempfile.mkdtemp(prefix="yolo_prune_ultra_")
    os.environ["YOLO_CONFIG_DIR"] = _config_dir
    _owner_pid = os.getpid()

    def _remove_config_dir():
        if os.getpid() == _owner_pid:  # forked workers (dataloaders) must not delete the parent's folder
            shutil.rmtree(_config_dir, ignore_errors=True)

    atexit.register(_remove_config_dir)
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
# matplotlib writes its font cache under ~/.cache unless told otherwise; keep it in the same private folder
if "MPLCONFIGDIR" not in os.environ and "YOLO_CONFIG_DIR" in os.environ:
    os.environ["MPLCONFIGDIR"] = os.environ["YOLO_CONFIG_DIR"]
