"""Token constraints: a left-to-right grammar over generated ids (e.g. codec slot order).

Codec-token LMs must emit codebook ``i`` in slot ``i`` of every frame, audio tokens only
after the audio-start marker, and so on. A constraint masks both draft and target logits
identically, so speculative sampling stays lossless with respect to the constrained
target, and the codec decoder never sees a malformed frame. The decoder carries the
state incrementally (one ``step`` per committed or drafted token), never re-walking the
whole sequence.
"""
from __future__ import annotations

from typing import Hashable, Protocol, Sequence

import torch


class TokenConstraint(Protocol):
    def initial(self) -> Hashable:
        """State before the first prompt token."""

    def step(self, state: Hashable, token: int) -> Hashable:
        """State after ``token``."""

    def allowed(self, state: Hashable) -> torch.Tensor:
        """(V,) bool mask of the ids allowed next; must allow at least one id."""


def walk(constraint: TokenConstraint, tokens: Sequence[int], state: Hashable) -> Hashable:
    """The state after ``tokens``, starting from ``state``."""
    for t in tokens:
        state = constraint.step(state, int(t))
    return state


def masks_along(constraint: TokenConstraint, state: Hashable, tokens: Sequence[int]) -> torch.Tensor:
    """(len(tokens)+1, V) masks: row i constrains the token after ``tokens[:i]``."""
    rows = [constraint.allowed(state)]
    for t in tokens:
        state = constraint.step(state, int(t))
        rows.append(constraint.allowed(state))
    return torch.stack(rows)


def apply_mask(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    if allowed is None:
        return logits
    return logits.masked_fill(~allowed.to(logits.device), float("-inf"))
