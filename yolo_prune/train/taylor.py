"""The Taylor criterion's ``grad_fn`` for a data yaml: the family's own training loss on a few real batches."""
from __future__ import annotations

from ..data.yolo import build_dataset, build_loader, load_data_yaml
from ..prune.taylor import accumulate_gradients
from . import config as train_config
from .losses import build_loss


def taylor_grad_fn(data_yaml, imgsz: int = 320, batches: int = 4, batch: int = 8, seed: int = 0):
    """Return ``grad_fn(model)`` that accumulates loss gradients over ``batches`` batches of ``data_yaml``.

    Augmentation is off so the scores depend only on the data and the seed.
    """
    def grad_fn(model) -> None:
        cfg = train_config.resolve({"imgsz": imgsz, "batch": batch})
        data = load_data_yaml(data_yaml)
        stride = max(int(s) for s in model.strides)
        dataset = build_dataset(data, "train", imgsz, batch, cfg, augment=False, stride=stride)
        loader = build_loader(dataset, batch, 0, seed, shuffle=False)
        criterion = build_loss(model, cfg, imgsz)
        device = next(model.parameters()).device

        def loss(m, b):
            return criterion(m(b["img"].to(device).float() / 255), b)[0]

        accumulate_gradients(model, loader, loss, batches)
    return grad_fn
