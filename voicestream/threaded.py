"""Blocking model work on a thread, consumed asynchronously with backpressure.

Shared by the async engine (:class:`voicestream.engine.TokenStream`) and the server's
sessions, for any blocking iterator: the worker may run at most ``max_ahead`` items ahead of the consumer (a consumer that
stops reading pauses its producer, so memory stays bounded), cancellation is a
``threading.Event`` the producer checks between steps, and exceptions cross to the
consumer instead of dying in the thread.  ``busy_s`` counts only time spent producing
(not time blocked on a slow consumer), which is what a real-time factor should measure.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()

__all__ = ["ThreadedStream"]


class ThreadedStream(Generic[T]):
    def __init__(
        self,
        produce: Callable[[threading.Event], Iterator[T]],
        *,
        max_ahead: int = 4,
        name: str = "voicestream-synthesis",
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.cancel_event = threading.Event()
        self.finished = threading.Event()
        self.busy_s = 0.0
        self._slots = threading.Semaphore(max_ahead)
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._on_exit = on_exit
        self._closed = False
        self._thread = threading.Thread(target=self._work, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _work(self, produce: Callable[[threading.Event], Iterator[T]]) -> None:
        try:
            it = produce(self.cancel_event)
            while not self.cancel_event.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                finally:
                    self.busy_s += time.perf_counter() - t0
                while not self._slots.acquire(timeout=0.05):  # backpressure, but stay cancellable
                    if self.cancel_event.is_set():
                        break
                if self.cancel_event.is_set():
                    break
                self._put(item)
            close = getattr(it, "close", None)
            if close is not None:
                close()  # runs the producer's finally blocks (stats, cache release) on this thread
        except BaseException as exc:  # surfaced to the consumer, not lost in the thread
            self._put(exc)
        finally:
            self.finished.set()
            if self._on_exit is not None:
                try:
                    self._loop.call_soon_threadsafe(self._on_exit)
                except RuntimeError:  # loop closed: nobody is counting any more
                    pass
            self._put(_DONE)

    def _put(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            pass

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
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
        """Ask the producer to stop at its next step."""
        self.cancel_event.set()

    async def aclose(self, timeout: float | None = None) -> None:
        """Cancel and wait until the worker thread has exited (its resources are freed)."""
        self.cancel()
        self._closed = True
        await asyncio.wait_for(asyncio.shield(asyncio.to_thread(self.finished.wait)), timeout)
