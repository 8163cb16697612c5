"""Logits processing shared by draft and target: repetition penalty, temperature, top-k, top-p.

Speculative sampling is lossless only when draft and target probabilities come out of
the same processing, so both go through :func:`process_logits`. Order and semantics follow
transformers' processors (penalty, then temperature, top-k, top-p) so greedy/sampled
output is comparable with ``model.generate``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..config import SamplingConfig


class SeenTokens:
    """The set of tokens already in the sequence, as a (V,) mask, for repetition penalty.

    Only maintained when the penalty is active; otherwise every method is a no-op.
    """

    def __init__(self, vocab_size: int, penalty: float, device: torch.device) -> None:
        self.active = penalty != 1.0
        self.mask = torch.zeros(vocab_size, dtype=torch.bool, device=device) if self.active else None

    def add(self, tokens: Sequence[int]) -> None:
        if self.active and len(tokens):
            self.mask[torch.as_tensor(list(tokens), dtype=torch.long, device=self.mask.device)] = True

    def rows(self, tokens: Sequence[int]) -> torch.Tensor | None:
        """Masks for k+1 positions: row i = seen | tokens[:i] (what position i may penalise)."""
        if not self.active:
            return None
        k = len(tokens)
        rows = self.mask.unsqueeze(0).repeat(k + 1, 1)
        for i, t in enumerate(tokens):
            rows[i + 1 :, t] = True
        return rows


def process_logits(logits: torch.Tensor, cfg: SamplingConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Processed logits (same shape as ``logits``, (..., V)); filtered entries are -inf.

    ``seen`` is a bool mask broadcastable to ``logits`` marking tokens to penalise.
    Temperature is not applied when ``cfg.greedy`` (argmax does not need it).
    """
    x = logits.float()
    if seen is not None and cfg.repetition_penalty != 1.0:
        pen = cfg.repetition_penalty
        x = torch.where(seen, torch.where(x > 0, x / pen, x * pen), x)
    if cfg.greedy:
        return x
    if cfg.temperature != 1.0:
        x = x / cfg.temperature
    vocab = x.shape[-1]
    if 0 < cfg.top_k < vocab:
        kth = torch.topk(x, cfg.top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = sorted_x.softmax(-1)
        # drop a token once the tokens before it already cover top_p (the top one always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= cfg.top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x


def to_probs(logits: torch.Tensor, cfg: SamplingConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Processed probabilities; for greedy configs a one-hot on the argmax."""
    x = process_logits(logits, cfg, seen)
    if cfg.greedy:
        return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).float()
    return x.softmax(-1)


def one_hot(token: int, like: torch.Tensor) -> torch.Tensor:
    """A (V,) float distribution putting all mass on ``token`` (a forced token's draft row)."""
    row = torch.zeros(like.shape[-1], dtype=torch.float32, device=like.device)
    row[token] = 1.0
    return row
