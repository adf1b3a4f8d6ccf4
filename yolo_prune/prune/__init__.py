"""Pruning: importance criteria, planning under constraints, physical surgery and β compensation."""
from .api import layer_widths, output_difference, prune_iteratively, prune_model
from .plan import PlanError, PruningPlan, agp_schedule, make_plan
from .surgery import SURGEONS, apply_plan
from .unstructured import prune_unstructured

__all__ = ["prune_model", "prune_iteratively", "prune_unstructured", "make_plan", "apply_plan", "PlanError",
           "PruningPlan", "agp_schedule", "SURGEONS", "layer_widths", "output_difference"]
