"""What an overlapped draft has drafted so far, shared between its lane and the target's.

In overlapped mode the draft never waits for a verification: it keeps drafting from where
it started, token by token, into an :class:`Ahead`, up to a horizon the target side moves
forward as it commits. The target side takes whatever follows its committed tokens at the
moment it is ready to verify (:meth:`Ahead.after`), and starts a new ``Ahead`` when the
draft has gone off the committed path (a rejection). One lock guards the lists; the
draft lane blocks in :meth:`Ahead.room` while it is a horizon ahead.
"""
from __future__ import annotations

import threading
from typing import Sequence

import torch


class Ahead:
    """Tokens drafted after ``context``, one entry per token (forced tokens included)."""

    def __init__(self, context: Sequence[int], horizon: int) -> None:
        self.context = list(context)
        self.tokens: list[int] = []
        self.rows: list[torch.Tensor | None] = []  # draft probabilities per token (sampling rules)
        self.free: list[bool] = []  # drafted (True) or forced by the constraint (False)
        self.confidence: list[float] = []
        self.ready: object | None = None  # CUDA event after the latest drafted token (None on CPU)
        self.horizon = horizon  # draft no further than this sequence length
        self.done = False  # the drafting job has returned (stop id, budget, abort or error)
        self._aborted = False
        self._cond = threading.Condition()

    # --- the draft lane's side ------------------------------------------------------------
    def room(self, length: int) -> bool:
        """Block while a sequence of ``length`` tokens has reached the horizon; False once
        aborted (the job should return)."""
        with self._cond:
            self._cond.wait_for(lambda: self._aborted or length < self.horizon)
            return not self._aborted

    def append(self, tokens: list[int], rows: list[torch.Tensor | None], free: list[bool], confidence: list[float],
               ready: object | None = None) -> None:
        with self._cond:
            self.ready = ready
            self.tokens += tokens
            self.rows += rows
            self.free += free
            self.confidence += confidence

    def finish(self) -> None:
        with self._cond:
            self.done = True

    # --- the target's side ----------------------------------------------------------------
    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def move_horizon(self, horizon: int) -> None:
        with self._cond:
            if horizon > self.horizon:
                self.horizon = horizon
                self._cond.notify_all()

    def _offset(self, seq: Sequence[int]) -> int | None:
        """Index into ``tokens`` of the entry for position ``len(seq)``, when everything
        drafted agrees with ``seq`` as far as both go; None when the draft has gone off it."""
        n, c = len(seq), len(self.context)
        if n < c or self.context != list(seq[:c]):
            return None
        covered = min(n, c + len(self.tokens)) - c
        return n - c if self.tokens[:covered] == list(seq[c : c + covered]) else None

    def follows(self, seq: Sequence[int], lag: int = 1) -> bool:
        """The draft is on ``seq``'s path and at most ``lag`` tokens behind its end (a job
        still running catches up; one that has returned must already be past it)."""
        with self._cond:
            off = self._offset(seq)
            if off is None:
                return False
            behind = off - len(self.tokens)
            return behind <= 0 if self.done else behind <= lag

    def after(self, seq: Sequence[int], limit: int, threshold: float = 0.0) -> tuple[list[int], list, list[bool], object]:
        """The drafted tokens that follow ``seq`` now (at most ``limit``, cut after the first
        drafted token whose confidence is below ``threshold``), their rows and flags, and
        the event to wait on before reading the rows (CUDA)."""
        with self._cond:
            off = self._offset(seq)
            if off is None or off >= len(self.tokens):
                return [], [], [], None
            end = min(len(self.tokens), off + limit)
            for i in range(off, end):
                if self.free[i] and self.confidence[i] < threshold:
                    end = i + 1
                    while end < len(self.tokens) and not self.free[end]:  # with the run forced after it
                        end += 1
                    break
            return self.tokens[off:end], self.rows[off:end], self.free[off:end], self.ready
