"""What one prunable index of a layer is: the ``Role`` of a ``Slot`` in the channel-dependency graph."""
from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    """A slot's role. A ``str`` Enum, so ``role == "bn"`` and json/f-strings see the plain value."""
    OUT = "out"          # conv output channel (a new channel: its filter)
    IN = "in"            # conv input channel (a slice of every filter)
    DW = "dw"            # depthwise conv channel: input j is output j
    BN = "bn"            # BatchNorm2d feature (γ scores it)
    LIN_OUT = "lin_out"  # linear output feature
    LIN_IN = "lin_in"    # linear input feature
    GN = "gn"            # GroupNorm channel (removed with its whole group)

    # Enum hashes members by name; hash like the string so {"bn": ...}[Role.BN] and `in {"bn"}` keep working
    __hash__ = str.__hash__
    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def produces(self) -> bool:
        """The layer creates this channel (its weights define it): producers trigger a group."""
        return self in _PRODUCERS

    @property
    def cuts_out(self) -> bool:
        """Removing the slot shrinks the layer's output side."""
        return self in _CUTS_OUT

    @property
    def cuts_in(self) -> bool:
        """Removing the slot shrinks the layer's input side."""
        return self in _CUTS_IN

    @property
    def is_norm(self) -> bool:
        """A normalisation layer's channel: its weight and bias are per-channel vectors (γ, β)."""
        return self in (Role.BN, Role.GN)

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_PRODUCERS = frozenset({Role.OUT, Role.DW, Role.LIN_OUT})
_CUTS_OUT = frozenset({Role.OUT, Role.DW, Role.BN, Role.LIN_OUT, Role.GN})
_CUTS_IN = frozenset({Role.IN, Role.DW, Role.LIN_IN})
_DESCRIPTIONS = {Role.OUT: "out channels", Role.DW: "channels (depthwise: in = out)", Role.IN: "in channels",
                 Role.BN: "BN features", Role.LIN_OUT: "out features", Role.LIN_IN: "in features",
                 Role.GN: "GroupNorm channels (whole groups)"}
