"""The command-line tools as modules of the package, so an installed yolo_prune has them (``yolo-prune CMD``).

``yolo_prune/commands/X.py`` holds tool X's code. The repository's ``tools/X.py`` only runs it as ``__main__``
(and re-exports its ``main`` when imported), so ``python tools/X.py`` from a checkout and ``yolo-prune CMD``
run the same file.
"""
