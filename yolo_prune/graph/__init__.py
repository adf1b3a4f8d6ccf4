"""Tracing and the channel-dependency graph."""
from ..layers import Role
from .trace import DependencyGraph, Group, Slot, TraceError, trace

__all__ = ["DependencyGraph", "Group", "Slot", "TraceError", "trace", "prunable_bn_names"]


def prunable_bn_names(model, imgsz: int = 64) -> list[str]:
    """BatchNorm2d layers whose channels the engine may prune (sparsity training penalises only these)."""
    graph = trace(model, imgsz=imgsz)
    return sorted({s.module for g in graph.groups for ch in g.channels for s in ch if s.role is Role.BN})
