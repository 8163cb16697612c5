"""Batched speculative decoding across sessions (continuous batching over slot caches)."""
from __future__ import annotations

import torch

from .scheduler import BatchConfig, BatchedDecoder
from .slots import SlotModel, UnsupportedModelError

__all__ = ["BatchConfig", "BatchedDecoder", "SlotModel", "UnsupportedModelError", "make_decoder"]


def make_decoder(target: torch.nn.Module, draft: torch.nn.Module | None = None, *,
                 batch: BatchConfig | None = None, **single_kwargs):
    """The decoder a voice runs on: one :class:`BatchedDecoder` shared by all its sessions
    when ``batch`` is given, else a per-session :class:`SpeculativeDecoder`. Both have the
    same ``generate()``; ``single_kwargs`` only apply to the per-session decoder."""
    if batch is not None:
        return BatchedDecoder(target, draft, config=batch)
    from ..spec.decoder import SpeculativeDecoder

    return SpeculativeDecoder(target, draft, **single_kwargs)
