"""The async face of the decoder: ``async for chunk in engine.stream(prompt, cfg)``.

Model work runs on a worker thread per generation so the event loop never blocks; chunks
cross to the loop through a bounded hand-off, so a consumer that stops reading pauses its
own generation instead of growing memory. Cancelling the consumer (task cancellation,
``aclose()``, leaving ``async with``) stops generation within one verify step and frees
its KV caches.
"""
from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator, Sequence

import torch

from .config import SpecConfig
from .spec.decoder import SpeculativeDecoder, TokenChunk
from .spec.stats import GenerationStats

_DONE = object()


class TokenStream:
    """One running generation. Iterate it asynchronously; ``cancel()`` stops it."""

    def __init__(self, decoder: SpeculativeDecoder, prompt: Sequence[int], cfg: SpecConfig, max_buffered: int) -> None:
        self.stats = GenerationStats()
        self._cancel = threading.Event()
        self._slots = threading.Semaphore(max_buffered)
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._finished = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._work, args=(decoder, list(prompt), cfg), name="voicestream-generation", daemon=True
        )
        self._thread.start()

    # --- worker thread ----------------------------------------------------------------
    def _work(self, decoder: SpeculativeDecoder, prompt: list[int], cfg: SpecConfig) -> None:
        try:
            for chunk in decoder.generate(prompt, cfg, cancel=self._cancel, stats=self.stats):
                while not self._slots.acquire(timeout=0.05):  # backpressure, but stay cancellable
                    if self._cancel.is_set():
                        return
                if self._cancel.is_set():
                    return
                self._put(chunk)
        except BaseException as exc:  # surfaced to the consumer, not lost in the thread
            self._put(exc)
        finally:
            self._finished.set()
            self._put(_DONE)

    def _put(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # loop already closed: nobody is listening any more
            pass

    # --- consumer side ----------------------------------------------------------------
    def __aiter__(self) -> "TokenStream":
        return self

    async def __anext__(self) -> TokenChunk:
        if self._closed:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self.cancel()
            raise
        if item is _DONE:
            self._closed = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._closed = True
            raise item
        self._slots.release()
        return item

    def cancel(self) -> None:
        """Stop generating; the worker exits within one verify step and frees its caches."""
        self._cancel.set()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the worker has exited (caches freed)."""
        await asyncio.wait_for(asyncio.to_thread(self._finished.wait), timeout)

    async def aclose(self) -> None:
        self.cancel()
        self._closed = True
        await asyncio.shield(asyncio.to_thread(self._finished.wait))

    async def __aenter__(self) -> "TokenStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self._cancel.set()


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
