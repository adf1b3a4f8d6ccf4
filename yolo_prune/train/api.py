"""Entry points the tools call: sparse training and fine-tuning from a model file, or resuming a run."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .loop import resume, train


def resolve_nc(nc, data_names: dict, source: str = "data") -> tuple[int, dict]:
    """``--nc``: 'auto' (or None) = the data's class count; an integer N >= it gives the model N classes (the
    data's names first, then "class<i>"). Returns (nc, names)."""
    n_data = len(data_names)
    if nc is None or str(nc).lower() == "auto":
        return n_data, dict(data_names)
    try:
        n = int(nc)
    except (TypeError, ValueError):
        raise ValueError(f"nc: expected 'auto' or a class count, found {nc!r}") from None
    if n < n_data:
        raise ValueError(f"nc: {n} is fewer than the {n_data} classes of {source} (its labels use indices up to "
                         f"{n_data - 1}); use --nc auto or >= {n_data}")
    return n, {**{i: f"class{i}" for i in range(n)}, **dict(data_names)}


def _load_model(weights, data, nc="auto"):
    """The model to train, with the class count ``nc`` asks for: a yaml/cfg is built with it; a file with weights
    keeps every tensor and gets a new class head when its class count differs (models.transfer)."""
    from ..data.sources import load_data_yaml
    from ..models import load
    from ..models.transfer import set_num_classes

    n, names = resolve_nc(nc, load_data_yaml(data)["names"], str(data))
    suffix = Path(str(weights)).suffix.lower()
    fresh = suffix in {".yaml", ".yml", ".cfg"}  # built from scratch: takes the class count directly
    det = load(weights, nc=n if fresh else None)
    if fresh:
        set_num_classes(det, n, names)  # same class count: only the names (incl. the extra "class<i>" of --nc N)
    elif det.nc != n:  # same class count: the loop adopts the data's names (and says so)
        print(f"{weights}: {set_num_classes(det, n, names)['summary']}", flush=True)
    return det


def _load_teacher(teacher, detector):
    if teacher is None:
        return None
    from ..models import load

    teacher_model = load(teacher)
    if teacher_model.nc != detector.nc:
        raise ValueError(f"{teacher}: teacher has {teacher_model.nc} classes, the student {detector.nc}")
    return teacher_model


def _with_native(result: dict) -> dict:
    """Write the family's native files beside best.pt (rank 0 only; see yolo_prune.models.native)."""
    import os

    from ..models import load
    from ..models.native import write_native

    best = Path(result.get("best") or "")
    if int(os.environ.get("RANK", -1)) in (-1, 0) and best.is_file():
        result["native"] = write_native(load(best), best)
    return result


def sparse_train(weights=None, data=None, out_dir="runs/sparse", overrides: dict | None = None, cfg_file=None,
                 resume_dir=None, teacher=None, hooks: dict[str, list[Callable]] | None = None,
                 nc="auto") -> dict:
    """Sparsity training (network slimming): ``weights`` is anything yolo_prune.models.load accepts (a yaml
    trains from scratch). ``overrides['sr']`` sets the L1 penalty (0 = plain training); ``overrides['sparsity'] =
    'targeted'`` with ``target_macs`` drives the channels a later cut removes to 0. ``teacher``: a model file to
    distil from (usually ``weights`` itself, so the network keeps its function while channels fade). ``nc``: 'auto'
    (the data's class count) or N; a model with another class count gets a new class head (models.transfer)."""
    if resume_dir is not None:
        return _with_native(resume(resume_dir, hooks=hooks))
    if weights is None or data is None:
        raise ValueError("sparse_train: --weights and --data are required unless --resume DIR is given")
    detector = _load_model(weights, data, nc)
    o = overrides or {}
    sparse = float(o.get("sr") or 0) > 0 or o.get("sparsity") == "targeted"
    return _with_native(train(detector, data, out_dir=out_dir, overrides=overrides, cfg_file=cfg_file, hooks=hooks,
                              teacher=_load_teacher(teacher, detector), stage="sparse" if sparse else "train",
                              teacher_source=None if teacher is None else str(teacher)))


def finetune(weights=None, data=None, out_dir="runs/finetune", overrides: dict | None = None, cfg_file=None,
             resume_dir=None, teacher=None, hooks: dict[str, list[Callable]] | None = None,
             nc="auto", engine: str = "ours") -> dict:
    """Fine-tune a (pruned) checkpoint without sparsity. The Detector is rebuilt from the checkpoint's own spec,
    so its pruned widths are kept. ``teacher``: path of the unpruned model for output distillation. ``nc``: as in
    ``sparse_train``; the new head keeps the pruned input widths.

    ``engine="ultralytics"``: ultralytics' own trainer with ``PrunedTrainer`` (ultralytics-family models only;
    ``overrides`` then take ultralytics' argument names). Either way ``out_dir/best.pt`` (ours) and the family's
    native files beside it are written.
    """
    if engine not in ("ours", "ultralytics"):
        raise ValueError(f"finetune: engine expected 'ours' or 'ultralytics', found {engine!r}")
    if engine == "ultralytics":
        for name, value in (("--teacher", teacher), ("--cfg", cfg_file), ("hooks", hooks)):
            if value:
                raise ValueError(f"finetune: {name} is supported by --engine ours only (ultralytics' trainer has "
                                 "its own callbacks and settings)")
        o = dict(overrides or {})
        if float(o.pop("sr", 0) or 0) > 0:
            raise ValueError("finetune: sr must be 0 (fine-tuning recovers accuracy; use sparse_train for sparsity)")
        from ..integrations.ultralytics import finetune_ultralytics
        return finetune_ultralytics(weights, data, out_dir=out_dir, overrides=o, resume_dir=resume_dir)
    if resume_dir is not None:
        return _with_native(resume(resume_dir, hooks=hooks))
    if weights is None or data is None:
        raise ValueError("finetune: --weights and --data are required unless --resume DIR is given")
    overrides = dict(overrides or {})
    if float(overrides.get("sr") or 0) > 0:
        raise ValueError("finetune: sr must be 0 (fine-tuning recovers accuracy; use sparse_train for sparsity)")
    overrides["sr"] = 0.0
    detector = _load_model(weights, data, nc)
    return _with_native(train(detector, data, out_dir=out_dir, overrides=overrides, cfg_file=cfg_file, hooks=hooks,
                              teacher=_load_teacher(teacher, detector), stage="finetune",
                              teacher_source=None if teacher is None else str(teacher)))
