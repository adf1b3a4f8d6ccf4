"""Layer handlers: one class per layer type, the single place the engine's per-type knowledge lives.

Importing this package registers every handler. It depends on torch only, so graph/, models/, prune/ and eval/
can all use it without importing each other.
"""
from . import conv, groupnorm, linear, norm  # noqa: F401  (registration)
from .base import (ChannelFlow, LayerHandler, handler_for, handler_for_kind, layer_ops, layer_widths, register,
                   registered_types, require_handler)
from .modules import CompensatedConv2d, kept_modes, resized_bn, resized_conv, resized_linear, set_module
from .roles import Role

__all__ = ["ChannelFlow", "CompensatedConv2d", "LayerHandler", "Role", "handler_for", "handler_for_kind",
           "kept_modes", "layer_ops", "layer_widths", "register", "registered_types", "require_handler", "resized_bn", "resized_conv",
           "resized_linear", "set_module"]
