"""Gradients for the first-order Taylor criterion: the family's own training loss on a few real batches."""
from __future__ import annotations


def taylor_grad_fn(data_yaml, imgsz: int = 320, batches: int = 4, batch: int = 8, seed: int = 0):
    """Return ``grad_fn(model)`` that accumulates loss gradients over ``batches`` batches of ``data_yaml``.

    Augmentation is off so the scores depend only on the data and the seed.
    """
    from ..data.yolo import build_dataset, build_loader, load_data_yaml
    from ..train import config as train_config
    from ..train.losses import build_loss

    def grad_fn(model) -> None:
        cfg = train_config.resolve({"imgsz": imgsz, "batch": batch})
        data = load_data_yaml(data_yaml)
        stride = max(int(s) for s in model.strides)
        dataset = build_dataset(data, "train", imgsz, batch, cfg, augment=False, stride=stride)
        loader = build_loader(dataset, batch, 0, seed, shuffle=False)
        criterion = build_loss(model, cfg, imgsz)
        device = next(model.parameters()).device
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():  # stripped checkpoints may have requires_grad False
            p.requires_grad_(True)
        was_training = model.training
        model.train()
        try:
            for i, b in enumerate(loader):
                if i >= batches:
                    break
                loss, _ = criterion(model(b["img"].to(device).float() / 255), b)
                loss.backward()
        finally:
            model.train(was_training)
            for p, f in zip(model.parameters(), flags):
                p.requires_grad_(f)
    return grad_fn
