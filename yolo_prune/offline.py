"""Keep ultralytics offline and away from the user's home directory, when asked to.

``apply()`` is called explicitly by every entry point (console scripts, tools/*.py, and the library functions that
build or train models: ``models.load``, ``train``, ``prune_checkpoint``, ``run_pipeline``, the ultralytics
trainer integration ...). Importing ``yolo_prune`` changes nothing: no environment variable, no folder.

It must run before ultralytics is imported: ultralytics reads these variables once, at import. It writes a
settings.json under YOLO_CONFIG_DIR on import, so unless the user chose a folder we give it a private temporary
one and remove it when the process ends. YOLO_OFFLINE=1 makes ultralytics' online check report offline without
touching the network, which disables its analytics events, update checks and auto-installs. Variables the user
has set are left as they are.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_applied = False


def apply() -> None:
    """Idempotent. Sets YOLO_CONFIG_DIR (private temp folder), YOLO_OFFLINE=1, YOLO_VERBOSE=False, MPLCONFIGDIR."""
    global _applied
    if _applied:
        return
    _applied = True
    # (when ultralytics is already imported, its settings folder is fixed; YOLO_OFFLINE still reaches the checks
    # that read it at call time)
    if "YOLO_CONFIG_DIR" not in os.environ:
        config_dir = tempfile.mkdtemp(prefix="yolo_prune_ultra_")
        os.environ["YOLO_CONFIG_DIR"] = config_dir
        owner_pid = os.getpid()

        def _remove_config_dir():
            if os.getpid() == owner_pid:  # forked workers (dataloaders) must not delete the parent's folder
                shutil.rmtree(config_dir, ignore_errors=True)

        atexit.register(_remove_config_dir)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    # matplotlib writes its font cache under ~/.cache unless told otherwise; keep it in the same private folder
    if "MPLCONFIGDIR" not in os.environ:
        os.environ["MPLCONFIGDIR"] = os.environ["YOLO_CONFIG_DIR"]


def applied() -> bool:
    return _applied
