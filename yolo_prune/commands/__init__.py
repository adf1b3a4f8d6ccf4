"""The command-line tools as modules of the package, so an installed yolo_prune has them (``yolo-prune CMD``).

Each ``yolo_prune/commands/X.py`` is the repository's ``tools/X.py`` itself (a symlink in the source tree, a copy
in the wheel): one file, run either as ``python tools/X.py`` from a checkout or as ``yolo-prune CMD``.
"""
