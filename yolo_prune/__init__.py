"""yolo_prune: structured channel pruning for YOLO detectors.

Importing this package never touches the network and never writes files. Ultralytics keeps a settings file and
downloads fonts/weights on demand; ``yolo_prune.offline`` points its config dir at a private temporary folder
and switches its online features off before ultralytics is imported by any of our modules.
"""
from . import offline as _offline  # noqa: F401  (must run before ultralytics is imported)

__version__ = "0.1.0"
