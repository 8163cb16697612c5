"""Adaptive draft length: how many tokens the draft proposes next.

A long draft wastes draft forwards (and target compute) when rejections come early; a
short one leaves acceptance on the table. ``heuristic`` grows after a fully accepted
chunk and shrinks after an early rejection (as transformers' assisted generation does);
``confidence`` drafts up to ``gamma_max`` and lets the draft stop itself once its own
probability for the token it picked drops below ``confidence_threshold``.
"""
from __future__ import annotations

from ..config import SpecConfig


class DraftLength:
    def __init__(self, cfg: SpecConfig) -> None:
        self.cfg = cfg
        self.gamma = cfg.gamma_max if cfg.draft_length == "confidence" else cfg.gamma

    @property
    def stops_on_low_confidence(self) -> bool:
        return self.cfg.draft_length == "confidence"

    def _next(self, gamma: int, accepted: int, drafted: int) -> int:
        cfg = self.cfg
        if cfg.draft_length != "heuristic":
            return gamma
        if accepted >= drafted:
            return min(gamma + 2, cfg.gamma_max)
        return max(gamma - 1, cfg.gamma_min)

    def peek_full(self, drafted: int) -> int:
        """The length the next chunk gets if the current one is fully accepted."""
        return self._next(self.gamma, drafted, drafted)

    def update(self, accepted: int, drafted: int) -> None:
        self.gamma = self._next(self.gamma, accepted, drafted)
