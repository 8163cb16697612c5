"""Batched speculative decoding across sessions (continuous batching over slot caches)."""
from __future__ import annotations

from dataclasses import replace

import torch

from .scheduler import BatchConfig, BatchedDecoder
from .slots import SlotModel, UnsupportedModelError

__all__ = ["BatchConfig", "BatchedDecoder", "SlotModel", "UnsupportedModelError", "make_decoder"]


def make_decoder(target: torch.nn.Module, draft: torch.nn.Module | None = None, *,
                 batch: BatchConfig | None = None, realtime_tokens_per_s: float | None = None, **single_kwargs):
    """The decoder a voice runs on: one :class:`BatchedDecoder` shared by all its sessions
    when ``batch`` is given, else a per-session :class:`SpeculativeDecoder`. Both have the
    same ``generate()``; ``single_kwargs`` only apply to the per-session decoder.
    ``realtime_tokens_per_s`` (the voice's tokens per second of audio) fills in the batch's
    lead-aware priority when the config leaves it unset."""
    if batch is not None:
        if batch.realtime_tokens_per_s is None and realtime_tokens_per_s:
            batch = replace(batch, realtime_tokens_per_s=float(realtime_tokens_per_s))
        return BatchedDecoder(target, draft, config=batch)
    from ..spec.decoder import SpeculativeDecoder

    return SpeculativeDecoder(target, draft, **single_kwargs)
