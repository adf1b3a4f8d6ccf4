"""Inference, NMS, COCO evaluation with pycocotools, and MACs/params counting."""
from .coco import evaluate
from .infer import letterbox, non_max_suppression, predict, predict_to_images
from .profile import profile

__all__ = ["evaluate", "letterbox", "non_max_suppression", "predict", "predict_to_images", "profile"]
