"""yolo_prune: structured channel pruning for YOLO detectors.

Importing this package sets nothing global: no environment variable, no folder, no network. Ultralytics keeps a
settings file and downloads fonts/weights on demand; the entry points (``yolo-prune ...``, ``tools/*.py``) and the
library functions that build, train or export models call ``yolo_prune.offline.apply()`` first, which points its
config dir at a private temporary folder and switches its online features off.
"""

__version__ = "0.1.0"
