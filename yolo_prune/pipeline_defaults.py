"""The pipeline's ``auto`` settings: epochs per stage, sparsity, learning rate and BN recalibration chosen from
the dataset size and whether the model comes pretrained. The rule and the figures behind it are written out in
yolo_prune/defaults/pipeline.yaml; this module is their one implementation, so the comment and the code stay together here too.

Without ``weights`` (the demo: a baseline trained from scratch on synthetic shapes) ``auto`` keeps the values the
demo was measured with (2 sparse + 5 fine-tune epochs, plain L1). With ``weights`` (the user's trained model):

* budget E = clamp(round(IMAGES_SEEN / n_train), MIN_EPOCHS, MAX_EPOCHS) epochs of sparse + fine-tune training:
  every model sees about IMAGES_SEEN training images (150 optimizer steps at batch 8) however small the set, and
  each stage gets at least 2 epochs. BCCD (292 train images) -> 4, coco128 -> 9, 5,000 images -> 4.
* sparse = E // 2, fine-tune = E - sparse; a same-budget plain fine-tune arm gets E.
* sparsity targeted (when pruning to target_macs) with sr 0, fading from the first sparse epoch until the last
  (target_start 0, target_zero_at 1.0): the model is already trained, so there is nothing to gain from more
  full-width epochs first (the late fade that won on the from-scratch demo, docs/BENCHMARKS.md run 7) and the
  slowest possible fade costs the least (coco128: fading a third of yolov5n's channels over 12 epochs, mAP
  0.285 -> 0.000; halving their γ at once, 0.05). The cut then removes exact zeros and costs nothing.
* BN statistics re-estimated on 16 train batches before every evaluation and save (bn_recalibrate 16): with
  running statistics lagging a fade, coco128 evaluated at 0.071 instead of 0.213 after one sparse epoch. The
  batches carry the training augmentation: re-estimated on clean images a mosaic-trained model loses (BCCD
  yolov5n M0 0.617 -> 0.512), which is what made earlier plain arms look 0.08 worse than M0.
* SGD with the yolov5 hyperparameters evolved for fine-tuning a pretrained yolov5 on VOC (data/hyps/hyp.VOC.yaml:
  lr0 0.00334, lrf 0.15, momentum 0.75, weight decay 0.00025), one step per batch. The from-scratch AdamW rule
  (lr0 0.002 * 5 / (4 + nc) = 0.00143 for 3 classes) took a BCCD-trained yolov5n to 0.05 mAP after one epoch
  (as issue 11 reports it; not re-measured here).
* the pruned model's own fine-tune after a reconstruct cut at lr0 0.01 (``finetune_lr0`` auto), 3x the recipe: the
  recipe must not move a converged model far (the plain arm), a model that just lost 0.18 mAP must move.
* no distillation in the sparse stage and the demo: it costs a teacher forward per batch (about 40 % more CPU
  time) and was not what limited those runs.

With ``weights`` and ``compensate: auto`` (the default) the chain is different: the cut is a least-squares
reconstruction on 128 unlabeled train images (BCCD at 0.5x MACs: 0.326 mAP50-95 straight after the cut, where
the 2-epoch targeted fade that used to precede a bias-compensated cut ended at 0.038), so there is no sparse stage
and the whole budget, ``recon_epochs`` = clamp(round(24000 / train images), 4, 80), goes to fine-tuning with BN
statistics frozen (BCCD, 4 epochs: 0.387 frozen, 0.351 with train-mode BN) and distillation from the baseline at
weight 0.2 (``finetune_distill`` auto: BCCD 16 epochs 0.568 vs 0.555 without). BCCD gets 80 epochs: 16 epochs kept
91.1 % of m0, 40 epochs 97.3 % (96.0 % of the same-budget plain arm) and 80 epochs 100.0 % (97.2 % of the plain arm),
the validation curve still rising between epochs 40 and 66 (docs/BENCHMARKS.md, 2026-12-03).
"""
from __future__ import annotations

IMAGES_SEEN = 1200
MIN_EPOCHS, MAX_EPOCHS = 4, 30
BN_RECALIBRATE_BATCHES = 16
DISTILL_AFTER_REFIT = 0.2
# after a reconstruct cut: BCCD (292 images), 0.5x MACs, frozen-BN fine-tune at the recipe above, 48-image val
# subset per epoch: 0.465 (1) -> 0.539 (4) -> 0.574 (13) -> 0.591 (20) -> 0.597 (30) -> 0.599 (40); the full test
# set gave 0.5624 at 16 epochs and 0.5843-0.5946 at 40. At lr0 0.01 (below) the curve goes on rising: a third M0,
# subset 0.598 (36-41) -> 0.611 (51) -> 0.620 (66), full test 0.6097 at 80 = m0 (0.6095). So about 80 x 292 images.
RECON_IMAGES_SEEN = 24000
RECON_MIN_EPOCHS, RECON_MAX_EPOCHS = 4, 80
# lr0 of the pruned model's fine-tune after a reconstruct cut (the plain arm keeps PRETRAINED_RECIPE's): BCCD 0.5x,
# same cut, 20 epochs 0.5835 vs 0.5708 at 0.00334, 40 epochs 0.6031 vs 0.5843 (docs/BENCHMARKS.md, 2026-12-03)
RECON_FINETUNE_LR0 = 0.01
PRETRAINED_RECIPE = {"optimizer": "SGD", "lr0": 0.00334, "lrf": 0.15, "momentum": 0.75, "weight_decay": 0.00025,
                     "nbs": "auto", "warmup_epochs": 0.0, "bn_recalibrate": BN_RECALIBRATE_BATCHES}
DEMO = {"epochs_sparse": 2, "epochs_finetune": 5, "sparsity": "l1"}
AUTO_KEYS = ("epochs_sparse", "epochs_finetune", "sparsity", "plain_arm_epochs")


def budget_epochs(n_train: int) -> int:
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(IMAGES_SEEN / max(1, n_train)))))


def recon_epochs(n_train: int) -> int:
    """Fine-tune epochs after a reconstruct cut: about RECON_IMAGES_SEEN images, RECON_MIN..RECON_MAX epochs."""
    return int(min(RECON_MAX_EPOCHS, max(RECON_MIN_EPOCHS, round(RECON_IMAGES_SEEN / max(1, n_train)))))


def _resolve_compensation(cfg: dict, pretrained: bool, notes: list) -> None:
    """compensate auto: reconstruct for the user's trained model (no sparse stage), bias for the demo."""
    if cfg.get("compensate") == "auto":
        cfg["compensate"] = "reconstruct" if pretrained else "bias"
    if is_auto(cfg.get("criterion")):
        # a trained dense model has no small γ to find: on BCCD (yolov5n M0 0.6148, 0.5x MACs, reconstruct, no
        # training) bn 0.2009, l1 0.3758, recon 0.3971, fpgm 0.4274, l2 0.4373, taylor 0.4513 (docs/BENCHMARKS.md)
        # (a targeted fade picks by |γ|, so the cut after it must too)
        refit = cfg["compensate"] == "reconstruct" and cfg.get("sparsity") != "targeted"
        cfg["criterion"] = "taylor" if refit else "bn"
    if cfg.get("finetune_freeze_bn") == "auto":
        cfg["finetune_freeze_bn"] = cfg["compensate"] == "reconstruct"
    if is_auto(cfg.get("finetune_distill")):
        # BCCD yolov5n, 0.5x MACs, 16 frozen-BN epochs after the refit: 0.568 with the baseline teaching at weight
        # 0.2, 0.555 without (docs/BENCHMARKS.md); weight 1 was no better than 0.2
        cfg["finetune_distill"] = DISTILL_AFTER_REFIT if cfg["compensate"] == "reconstruct" else 0.0
    if not (pretrained and cfg["compensate"] == "reconstruct"):
        return
    if cfg.get("epochs_sparse") == "auto":
        cfg["epochs_sparse"] = 0  # nothing to fade: the refit stands in for the removed channels
    search = ", weighed by the MACs each saves (exponent searched by the output gap)" \
        if cfg.get("macs_exponent") == "search" else ""
    notes.append(f"compensate: reconstruct (least-squares refit on {cfg.get('calib_images')} unlabeled train "
                 f"images), channels ranked by {cfg['criterion']}{search}, no sparse stage, fine-tune with frozen BN "
                 "statistics"
                 + (f" and distillation from the baseline (weight {cfg['finetune_distill']})"
                    if cfg["finetune_distill"] else ""))


def resolve_auto(cfg: dict, n_train: int, defaults: dict) -> tuple[dict, list[str]]:
    """Replace every ``auto`` of ``cfg`` (a copy is returned) and say what was chosen and why, one line each.
    ``defaults``: yolo_prune/defaults/pipeline.yaml as shipped, to tell the user's own ``train`` settings from the defaults."""
    cfg = dict(cfg)
    notes = []
    pretrained = cfg.get("weights") is not None
    _resolve_compensation(cfg, pretrained, notes)
    _resolve_finetune_lr0(cfg, pretrained, defaults, notes)
    if not pretrained:
        for k, v in DEMO.items():
            if cfg.get(k) == "auto":
                cfg[k] = v
        if cfg.get("plain_arm_epochs") == "auto":
            cfg["plain_arm_epochs"] = cfg["epochs_sparse"] + cfg["epochs_finetune"]
        if cfg.get("sr") == "auto":
            cfg["sr"] = 0.001
        return cfg, notes
    e = recon_epochs(n_train) if cfg["compensate"] == "reconstruct" else budget_epochs(n_train)
    if cfg.get("epochs_sparse") == "auto" and cfg.get("epochs_finetune") == "auto":
        cfg["epochs_sparse"], cfg["epochs_finetune"] = e // 2, e - e // 2
        notes.append(f"epochs: {e} for {n_train} train images (about {IMAGES_SEEN} images seen), "
                     f"{e // 2} sparse + {e - e // 2} fine-tune")
    elif cfg.get("epochs_sparse") == "auto":
        cfg["epochs_sparse"] = max(0, e - int(cfg["epochs_finetune"]))
    elif cfg.get("epochs_finetune") == "auto":
        cfg["epochs_finetune"] = max(1, e - int(cfg["epochs_sparse"]))
        seen = RECON_IMAGES_SEEN if cfg["compensate"] == "reconstruct" else IMAGES_SEEN
        after = f" after {cfg['epochs_sparse']} sparse" if int(cfg["epochs_sparse"]) else ""
        notes.append(f"epochs: {cfg['epochs_finetune']} fine-tune{after} for {n_train} train images "
                     f"(about {seen} images seen)")
    if cfg.get("plain_arm_epochs") == "auto":
        cfg["plain_arm_epochs"] = int(cfg["epochs_sparse"]) + int(cfg["epochs_finetune"])
    if cfg.get("sparsity") == "auto":
        if int(cfg["epochs_sparse"]) == 0:
            cfg["sparsity"] = "l1"  # no sparse stage: unused
        elif cfg.get("target_macs") is not None and cfg.get("criterion") == "bn":
            cfg["sparsity"] = "targeted"
            cfg["target_start"], cfg["target_zero_at"] = 0, 1.0
            notes.append("sparsity: targeted fade over the whole sparse stage (a trained model: the slowest fade "
                         "costs least), sr 0")
        else:
            cfg["sparsity"] = "l1"
    if cfg.get("sr") == "auto":
        cfg["sr"] = 0.0 if cfg["sparsity"] == "targeted" else 0.001
    if cfg.get("train_recipe") == "auto":
        # under the stage sections, and only for keys the user did not set in the shared ``train`` section
        user_train = {k for k, v in (cfg.get("train") or {}).items() if (defaults.get("train") or {}).get(k) != v}
        recipe = {k: v for k, v in PRETRAINED_RECIPE.items() if k not in user_train}
        for section in ("sparse_train", "finetune_train"):
            cfg[section] = {**recipe, **(cfg.get(section) or {})}
        bn = (f"BN statistics re-estimated on {BN_RECALIBRATE_BATCHES} batches before each evaluation" +
              (" (the pruned model's fine-tune: frozen BN statistics instead)" if cfg.get("finetune_freeze_bn") is True
               else ""))
        notes.append(f"training: SGD lr0 0.00334 (yolov5 hyp.VOC fine-tune recipe), {bn}")
    return cfg, notes


def _resolve_finetune_lr0(cfg: dict, pretrained: bool, defaults: dict, notes: list) -> None:
    """finetune_lr0 auto: 3x the recipe's rate for the pruned model after a reconstruct cut, unless the user set lr0
    under train or finetune_train (then theirs, for both arms)."""
    if not is_auto(cfg.get("finetune_lr0")):
        return
    user_lr0 = any((cfg.get(sec) or {}).get("lr0") != (defaults.get(sec) or {}).get("lr0")
                   for sec in ("train", "finetune_train"))
    refit = pretrained and cfg["compensate"] == "reconstruct"
    cfg["finetune_lr0"] = RECON_FINETUNE_LR0 if refit and not user_lr0 else None
    if cfg["finetune_lr0"] is not None:
        notes.append(f"the pruned model's fine-tune: lr0 {RECON_FINETUNE_LR0} (3x the plain arm's: the cut model is "
                     "far from an optimum)")


def is_auto(value) -> bool:
    return isinstance(value, str) and value.lower() == "auto"
