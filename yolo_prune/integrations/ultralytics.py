"""Train pruned models with ultralytics' own trainer, keeping their pruned widths.

``ultralytics.YOLO(p).train()`` hands the trainer a model *yaml* and the loaded module as "pretrained weights":
``DetectionTrainer.get_model`` builds a fresh full-width model from the yaml and copies only the tensors whose
shapes match, so a pruned model silently trains at full width. ``PrunedTrainer`` overrides exactly that hook: its
model is the checkpoint's own module (deep-copied), never rebuilt. Everything else is ultralytics' trainer
unchanged: AMP, EMA, DDP (the worker processes load ``last``/the start file and reach the same hook), resume,
callbacks, ``results.csv``, ``weights/best.pt`` and ``weights/last.pt`` (which ``YOLO()`` and our ``load()``
reopen at the pruned widths)::

    from ultralytics import YOLO
    from yolo_prune.integrations.ultralytics import PrunedTrainer
    YOLO("pruned.ultralytics.pt").train(trainer=PrunedTrainer, data="data.yaml", epochs=30, imgsz=640)

Two more things it changes, both to keep training offline: the data yaml is read by our own validating parser
(ultralytics' ``check_det_dataset`` runs a yaml's ``download:`` field, a url or a python script, and fetches a
font), and, during ``train()``, ultralytics' AMP check (it downloads a reference model) and font lookup (it asks
the network for Arial.ttf) are replaced by offline equivalents; they are restored when ``train()`` returns.

``finetune_ultralytics`` is what ``tools/finetune.py --engine ultralytics`` calls.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import time
from pathlib import Path

import torch
from torch import nn

from .. import offline

offline.apply()  # this module imports ultralytics right away: its settings must be in place first
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402
# matplotlib, ultralytics.YOLO and the modules offline_guards patches are imported when used (heavy)

__all__ = ["PrunedTrainer", "finetune_ultralytics", "offline_guards", "ULTRALYTICS_KEYS"]


def _local_font(font="Arial.ttf"):
    """ultralytics' check_font without the download: the user's font if present, else matplotlib's DejaVuSans."""
    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    name = Path(str(font)).name
    if (USER_CONFIG_DIR / name).is_file():
        return USER_CONFIG_DIR / name
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def _amp_check(model: nn.Module) -> bool:
    """ultralytics' check_amp without its reference model download: fp32 vs autocast outputs of this model.

    Same criterion as ultralytics (allclose, atol 0.5, on the decoded boxes and scores); CPU/MPS never use AMP.
    """
    device = next(model.parameters()).device
    if device.type in {"cpu", "mps"}:
        return False
    m = copy.deepcopy(model).eval()
    gen = torch.Generator(device="cpu").manual_seed(0)
    s = max(256, int(getattr(m, "stride", torch.tensor([32])).max()) * 4)
    x = torch.rand(2, 3, s, s, generator=gen).to(device)
    try:
        with torch.no_grad():
            a = m(x)
            a = a[0] if isinstance(a, (tuple, list)) else a
            with torch.autocast(device.type):
                b = m(x)
                b = b[0] if isinstance(b, (tuple, list)) else b
        ok = a.shape == b.shape and bool(torch.isfinite(b).all()) and torch.allclose(a, b.float(), atol=0.5)
    except RuntimeError as e:  # an op without a half kernel: train in fp32
        LOGGER.warning(f"AMP: check failed ({e}); training in fp32")
        return False
    LOGGER.info(f"AMP: checks {'passed' if ok else 'failed, training in fp32'} (yolo_prune offline check)")
    return ok


@contextlib.contextmanager
def offline_guards():
    """Swap ultralytics' AMP check and font lookup for offline ones for the duration of the block."""
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer_mod
    import ultralytics.utils.checks as checks
    import ultralytics.utils.plotting as plotting

    patches = [(trainer_mod, "check_amp", _amp_check), (checks, "check_amp", _amp_check),
               (checks, "check_font", _local_font), (plotting, "check_font", _local_font),
               (data_utils, "check_font", _local_font)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    try:
        for mod, name, new in patches:
            setattr(mod, name, new)
        yield
    finally:
        for mod, name, old in saved:
            setattr(mod, name, old)


def _head_nc(model: nn.Module) -> int | None:
    head = model.model[-1] if isinstance(getattr(model, "model", None), nn.Sequential) else None
    return getattr(head, "nc", None)


class PrunedTrainer(DetectionTrainer):
    """ultralytics' DetectionTrainer whose model is the given module as is (pruned widths kept, never rebuilt)."""

    def get_model(self, cfg=None, weights=None, verbose=True):
        from ..models.ultralytics import mark_pruned, pruned_marker, widths_differ_from_yaml

        if not isinstance(weights, nn.Module):
            raise ValueError("PrunedTrainer trains an existing model and never builds one from a yaml (that would "
                             "lose pruned widths): start from YOLO('pruned.ultralytics.pt') and keep "
                             f"pretrained=True (found weights={type(weights).__name__}, cfg={type(cfg).__name__})")
        model = copy.deepcopy(weights).float()
        nc = _head_nc(model)
        if nc is not None and nc != self.data["nc"]:
            raise ValueError(f"{self.args.data}: the dataset has {self.data['nc']} classes, the model's head {nc}; "
                             "PrunedTrainer keeps the model as it is (re-head it first, e.g. yolo_prune --nc)")
        for p in model.parameters():
            if p.dtype.is_floating_point:
                p.requires_grad_(True)
        if hasattr(model, "criterion"):
            model.criterion = None  # rebuilt from this run's hyperparameters
        if pruned_marker(getattr(model, "yaml", None)) is None and widths_differ_from_yaml(model):
            mark_pruned(model)  # its best.pt / last.pt then refuse ultralytics' default trainer loudly
        if verbose:
            n = sum(p.numel() for p in model.parameters())
            LOGGER.info(f"PrunedTrainer: training the given model as is ({n:,} parameters, widths kept)")
        return self.set_model_names_for_load(model)

    def get_dataset(self):
        """The data yaml through our validating parser: no download field run, no font fetched."""
        from ..data.sources import load_data_yaml

        d = load_data_yaml(self.args.data)
        data = {"path": str(d["path"]), "yaml_file": str(d["yaml_file"]), "names": dict(d["names"]),
                "nc": d["nc"], "channels": 3}
        for split in ("train", "val", "test"):
            if split in d:
                data[split] = d[split][0] if len(d[split]) == 1 else list(d[split])
        if self.args.single_cls:
            data["names"], data["nc"] = {0: "item"}, 1
        return data

    def train(self):
        with offline_guards():
            return super().train()


# ------------------------------------------------------------------------------------ tools/finetune.py engine
# our flag names -> ultralytics' argument names (the same except where noted)
ULTRALYTICS_KEYS = {"epochs": "epochs", "imgsz": "imgsz", "batch": "batch", "device": "device", "workers": "workers",
                    "optimizer": "optimizer", "lr0": "lr0", "seed": "seed", "val": "val"}


def _ultralytics_args(overrides: dict) -> dict:
    args = {}
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k == "val_max_images":
            raise ValueError("--val-max-images is not an ultralytics trainer setting; with --engine ultralytics "
                             "make a smaller val split (or use --no-val)")
        if k in ("sr", "distill_weight"):
            continue  # ours only; finetune() has already checked sr == 0
        args[ULTRALYTICS_KEYS.get(k, k)] = v  # --set KEY=VALUE: ultralytics' own keys, checked by ultralytics
    if str(args.get("device", "")).startswith("cuda:"):
        args["device"] = str(args["device"])[5:]
    return args


def _history(csv_path: Path) -> list[dict]:
    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            try:
                row[k.strip()] = float(v)
            except (TypeError, ValueError):
                pass
        out.append(row)
    return out


def finetune_ultralytics(weights=None, data=None, out_dir="runs/finetune", overrides: dict | None = None,
                         resume_dir=None) -> dict:
    """Fine-tune an ultralytics-family (pruned) model with ultralytics' trainer and ``PrunedTrainer``.

    ``out_dir`` gets ultralytics' run folder (``weights/best.pt``, ``weights/last.pt``, ``results.csv``,
    ``args.yaml``, plots) plus ``best.pt`` in our format and the native outputs beside it
    (``best.ultralytics.pt``). ``resume_dir``: continue the run in that folder from ``weights/last.pt``.
    """
    from ultralytics import YOLO

    from ..models import load
    from ..models.checkpoint import save
    from ..models.native import write_native
    from ..models.spec import CompensatedConv2d
    from ..models.ultralytics import save_ultralytics_pt

    t0 = time.time()
    if resume_dir is not None:
        out = Path(resume_dir)
        last = out / "weights" / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"{last}: nothing to resume (an --engine ultralytics run writes weights/last.pt)")
        YOLO(str(last)).train(trainer=PrunedTrainer, resume=True)
    else:
        if weights is None or data is None:
            raise ValueError("finetune: --weights and --data are required unless --resume DIR is given")
        det = load(weights)
        if det.family != "ultralytics":
            raise ValueError(f"{weights}: --engine ultralytics trains ultralytics-family models (YOLOv8/11, "
                             f"YOLOv5u); this is a {det.family} model: use the default --engine ours")
        if any(isinstance(m, CompensatedConv2d) for m in det.modules()):
            raise ValueError(f"{weights}: holds CompensatedConv2d layers (prune --compensate exact), which "
                             "ultralytics cannot hold; prune with --compensate bias, or use --engine ours")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        start = save_ultralytics_pt(det, out / "start.ultralytics.pt")
        args = {"plots": True, **_ultralytics_args(overrides or {})}
        YOLO(str(start)).train(trainer=PrunedTrainer, data=str(data), project=str(out.resolve().parent),
                               name=out.name, exist_ok=True, **args)
    wdir = out / "weights"
    best = wdir / "best.pt" if (wdir / "best.pt").is_file() else wdir / "last.pt"
    det = load(best)
    ours = save(det, out / "best.pt", meta={"stage": "finetune", "engine": "ultralytics", "source": str(best)})
    native = write_native(det, ours)
    history = _history(out / "results.csv")
    return {"out_dir": str(out), "best": str(ours), "last": str(wdir / "last.pt"),
            "ultralytics_best": str(best), "native": native, "epochs_done": len(history), "history": history,
            "train_s": time.time() - t0, "engine": "ultralytics"}
