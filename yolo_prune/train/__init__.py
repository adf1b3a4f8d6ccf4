"""Training: the Trainer with named hooks, losses, EMA, sparsity (BN-γ L1), distillation, checkpoints, DDP."""
from .api import finetune, sparse_train
from .hooks import HOOK_EVENTS, Hooks, LoopState
from .loop import resume, train
from .sparsity import gamma_shares, prunable_bns, sr_at
from .trainer import Trainer

__all__ = ["train", "resume", "sparse_train", "finetune", "Trainer", "Hooks", "LoopState", "HOOK_EVENTS",
           "prunable_bns", "gamma_shares", "sr_at"]
