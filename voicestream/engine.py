"""The async face of the decoder: ``async for chunk in engine.stream(prompt, cfg)``.

Model work runs on a worker thread per generation so the event loop never blocks; chunks
cross to the loop through a bounded hand-off, so a consumer that stops reading pauses its
own generation instead of growing memory. Cancelling the consumer (task cancellation,
``aclose()``, leaving ``async with``) stops generation within one verify step and frees
its KV caches.
"""
from __future__ import annotations

import asyncio
from typing import Sequence

import torch

from .config import SpecConfig
from .spec.decoder import SpeculativeDecoder, TokenChunk
from .spec.stats import GenerationStats
from .threaded import ThreadedStream


class TokenStream(ThreadedStream[TokenChunk]):
    """One running generation. Iterate it asynchronously; ``cancel()`` stops it."""

    def __init__(self, decoder: SpeculativeDecoder, prompt: Sequence[int], cfg: SpecConfig, max_buffered: int) -> None:
        self.stats = GenerationStats()
        prompt = list(prompt)
        super().__init__(
            lambda cancel: decoder.generate(prompt, cfg, cancel=cancel, stats=self.stats),
            max_ahead=max_buffered,
            name="voicestream-generation",
        )

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the worker has exited (caches freed)."""
        await asyncio.wait_for(asyncio.to_thread(self.finished.wait), timeout)

    async def __aenter__(self) -> "TokenStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self.cancel_event.set()


class SpeculativeEngine:
    """Async streaming over a shared :class:`SpeculativeDecoder` (models loaded once)."""

    def __init__(self, decoder: SpeculativeDecoder, *, max_buffered_chunks: int = 64) -> None:
        self.decoder = decoder
        self.max_buffered_chunks = max_buffered_chunks

    @classmethod
    def from_models(
        cls, target: torch.nn.Module, draft: torch.nn.Module | None = None, **kwargs
    ) -> "SpeculativeEngine":
        return cls(SpeculativeDecoder(target, draft), **kwargs)

    def stream(self, prompt: Sequence[int], cfg: SpecConfig | None = None) -> TokenStream:
        """Start generating; returns an async iterator of :class:`TokenChunk`."""
        return TokenStream(self.decoder, prompt, cfg or SpecConfig(), self.max_buffered_chunks)

    async def generate(self, prompt: Sequence[int], cfg: SpecConfig | None = None) -> tuple[list[int], GenerationStats]:
        """Collect a whole generation: (tokens, stats)."""
        tokens: list[int] = []
        async with self.stream(prompt, cfg) as stream:
            async for chunk in stream:
                tokens.extend(chunk.tokens)
        return tokens, stream.stats

    def close(self) -> None:
        self.decoder.close()
