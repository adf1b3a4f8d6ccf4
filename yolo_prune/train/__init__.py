"""Training: the loop with named hooks, losses, EMA, sparsity (BN-γ L1), distillation, checkpoints, DDP."""
from .api import finetune, sparse_train
from .loop import HOOK_EVENTS, LoopState, resume, train
from .sparsity import gamma_shares, prunable_bns, sr_at

__all__ = ["train", "resume", "sparse_train", "finetune", "LoopState", "HOOK_EVENTS", "prunable_bns",
           "gamma_shares", "sr_at"]
