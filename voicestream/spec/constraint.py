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

    # Optional: ``forced(state) -> int | None``, the only id allowed after ``state`` when
    # there is exactly one. Constraints that have it get jump-forward (see ``forced_run``).


def forced_token(constraint: TokenConstraint, state: Hashable) -> int | None:
    """The one id ``constraint`` allows after ``state``, or None when it leaves a choice.

    Only constraints that say so (an optional ``forced(state)`` method) are asked: finding
    out from the mask would cost a reduction over the vocabulary for every token.
    """
    forced = getattr(constraint, "forced", None)
    return forced(state) if forced is not None else None


def forced_run(
    constraint: TokenConstraint | None, state: Hashable, stop: frozenset[int], limit: int
) -> tuple[list[int], Hashable]:
    """Jump-forward: the tokens the constraint forces after ``state`` and the state after them.

    Why: a token the grammar forces (a voice LM's copied prompt characters, a marker that
    must follow) needs no draft and can never be rejected, so it joins the sequence
    without a forward of its own and is verified for free with the next chunk (the
    target must still see it for its KV cache). Stops after a forced stop id or at
    ``limit`` tokens.
    """
    out: list[int] = []
    if constraint is None:
        return out, state
    while len(out) < limit:
        token = forced_token(constraint, state)
        if token is None:
            break
        out.append(token)
        state = constraint.step(state, token)
        if token in stop:
            break
    return out, state


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
