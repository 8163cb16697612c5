"""Token constraints: a left-to-right grammar over generated ids (e.g. codec slot order).

Codec-token LMs must emit codebook ``i`` in slot ``i`` of every frame, audio tokens only
after the audio-start marker, and so on. A constraint masks both draft and target logits
identically, so speculative sampling stays lossless with respect to the constrained
target, and the codec decoder never sees a malformed frame. The decoder carries the
state incrementally (one ``step`` per committed or drafted token), never re-walking the
whole sequence.
"""
from __future__ import annotations

from typing import Hashable, NamedTuple, Protocol, Sequence

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
    # Optional: ``greedy(state) -> bool``, True where the next id must be the model's best
    # legal id whatever the sampling settings (see ``constrain``).


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


def greedy_at(constraint: TokenConstraint, state: Hashable) -> bool:
    """Whether ``constraint`` asks for the best legal id after ``state`` (optional ``greedy``)."""
    greedy = getattr(constraint, "greedy", None)
    return bool(greedy(state)) if greedy is not None else False


def walk(constraint: TokenConstraint, tokens: Sequence[int], state: Hashable) -> Hashable:
    """The state after ``tokens``, starting from ``state``."""
    for t in tokens:
        state = constraint.step(state, int(t))
    return state


class Rows(NamedTuple):
    """What a constraint says about k+1 verify rows: legal ids and where to choose greedily."""

    allowed: torch.Tensor | None  # (k+1, V) bool, or None without a constraint
    greedy: torch.Tensor | None  # (k+1,) bool, or None when no row is greedy


def masks_along(constraint: TokenConstraint | None, state: Hashable, tokens: Sequence[int]) -> Rows:
    """Rows for the tokens after ``tokens[:i]``, i = 0..len(tokens)."""
    if constraint is None:
        return Rows(None, None)
    states = [state]
    for t in tokens:
        state = constraint.step(state, int(t))
        states.append(state)
    greedy = [greedy_at(constraint, s) for s in states]
    return Rows(
        torch.stack([constraint.allowed(s) for s in states]),
        torch.tensor(greedy, dtype=torch.bool) if any(greedy) else None,
    )


def apply_mask(logits: torch.Tensor, allowed: torch.Tensor | None, greedy: torch.Tensor | None = None) -> torch.Tensor:
    """Illegal ids get -inf; rows flagged in ``greedy`` keep only their best legal id.

    Why greedy rows: a voice's phone list and durations are a plan the audio must follow,
    and a sampled slip there costs a mispronounced word, while the codec tokens want
    sampling. A greedy row becomes a one-hot distribution for draft and target alike, so
    speculative sampling stays lossless with respect to the target decoded this way.
    """
    if allowed is None:
        return logits
    x = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    if greedy is None:
        return x
    greedy = greedy.to(x.device)
    best = x.argmax(-1, keepdim=True)
    keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, best, True) | ~greedy[..., None]
    return x.masked_fill(~keep, float("-inf"))


def constrain(logits: torch.Tensor, constraint: TokenConstraint | None, state: Hashable) -> torch.Tensor:
    """One row of logits under ``constraint`` after ``state`` (legal ids; greedy if asked)."""
    if constraint is None:
        return logits
    greedy = torch.tensor(True) if greedy_at(constraint, state) else None
    return apply_mask(logits, constraint.allowed(state), greedy)
