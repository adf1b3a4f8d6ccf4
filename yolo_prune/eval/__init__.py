"""Inference, NMS, COCO evaluation with pycocotools, and MACs/params counting."""
from .profile import profile

__all__ = ["profile"]
