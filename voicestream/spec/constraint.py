"""Token constraints: a left-to-right grammar over generated ids (e.g. codec slot order).

Codec-token LMs must emit codebook ``i`` in slot ``i`` of every frame, audio tokens only
after the audio-start marker, and so on. A constraint masks both draft and target logits
identically, so speculative sampling stays lossless with respect to the constrained
target, and the codec decoder never sees a malformed frame. The decoder carries the
state incrementally (one ``step`` per committed or drafted token), never re-walking the
whole sequence.
"""
from __future__ import annotations

from typing import Callable, Hashable, NamedTuple, Protocol, Sequence

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
    # Optional: ``pick(state) -> Pick | None``, a deterministic rule choosing the next id
    # from the model's legal logits there (e.g. a field-wise median); overrides ``greedy``.


#: Chooses one id from a row of logits whose illegal ids are ``-inf``.
Pick = Callable[[torch.Tensor], int]


def argmax_pick(row: torch.Tensor) -> int:
    return int(row.argmax())


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


def pick_at(constraint: TokenConstraint, state: Hashable) -> Pick | None:
    """The rule that decides the id after ``state`` (optional ``pick``, else ``greedy``:
    the best legal id), or None when the request's own sampling decides."""
    pick = getattr(constraint, "pick", None)
    if pick is not None:
        rule = pick(state)
        if rule is not None:
            return rule
    greedy = getattr(constraint, "greedy", None)
    return argmax_pick if greedy is not None and greedy(state) else None


def walk(constraint: TokenConstraint, tokens: Sequence[int], state: Hashable) -> Hashable:
    """The state after ``tokens``, starting from ``state``."""
    for t in tokens:
        state = constraint.step(state, int(t))
    return state


class Rows(NamedTuple):
    """What a constraint says about k+1 verify rows: legal ids, and which rows a rule decides."""

    allowed: torch.Tensor | None  # (k+1, V) bool, or None without a constraint
    picks: tuple[Pick | None, ...] | None  # per row, or None when no row is decided by a rule


def masks_along(constraint: TokenConstraint | None, state: Hashable, tokens: Sequence[int]) -> Rows:
    """Rows for the tokens after ``tokens[:i]``, i = 0..len(tokens)."""
    if constraint is None:
        return Rows(None, None)
    states = [state]
    for t in tokens:
        state = constraint.step(state, int(t))
        states.append(state)
    picks = tuple(pick_at(constraint, s) for s in states)
    return Rows(
        torch.stack([constraint.allowed(s) for s in states]),
        picks if any(p is not None for p in picks) else None,
    )


def apply_mask(
    logits: torch.Tensor, allowed: torch.Tensor | None, picks: Sequence[Pick | None] | None = None
) -> torch.Tensor:
    """Illegal ids get -inf; a row with a pick rule keeps only the id its rule chooses.

    Why decided rows: a voice's phone list and durations are a plan the audio must follow,
    and a sampled slip there costs a mispronounced word (greedy rows), and a codec's
    ordinal fields may be better decided by a median than drawn (``FieldMedian``). Such a
    row becomes a one-hot distribution for draft and target alike, so speculative
    sampling stays lossless with respect to the target decoded this way, and greedy
    speculation stays exact.  ``logits`` is one row (V,) or rows (n, V).
    """
    if allowed is None:
        return logits
    x = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    if picks is None:
        return x
    rows = x if x.dim() == 2 else x[None]
    keep = torch.ones_like(rows, dtype=torch.bool)
    for i, pick in enumerate(picks):
        if pick is not None:
            keep[i] = False
            keep[i, pick(rows[i])] = True
    return rows.masked_fill(~keep, float("-inf")).view_as(x)


def legal_span(constraint: TokenConstraint | None, state: Hashable) -> tuple[int, int] | None:
    """``(lo, hi)``: the ids allowed after ``state`` all lie in ``[lo, hi)`` -- when that is
    under half the vocabulary, else None. A runner given it computes the LM head over those
    rows only (a codec slot is one codebook: 128-1024 of the built-in voice's 5568 ids);
    the other logits come back ``-inf``, which :func:`constrain` would make them anyway."""
    if constraint is None:
        return None
    allowed = constraint.allowed(state)
    idx = allowed.nonzero()
    if idx.numel() == 0:
        return None
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    return (lo, hi) if hi - lo <= allowed.numel() // 2 else None


def constrain(logits: torch.Tensor, constraint: TokenConstraint | None, state: Hashable) -> torch.Tensor:
    """One row of logits under ``constraint`` after ``state`` (legal ids; decided if asked)."""
    if constraint is None:
        return logits
    pick = pick_at(constraint, state)
    return apply_mask(logits, constraint.allowed(state), (pick,) if pick is not None else None)
