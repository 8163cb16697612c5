"""The per-session ordered queue between synthesis and the socket writer.

One queue (not separate audio and event queues) because order is part of the
protocol: ``audio_start`` precedes its first frame, ``done`` follows the last one.
Audio is bounded in *milliseconds*: a producer awaiting :meth:`put_audio` is how a
client that stops reading pauses its own generation.  Events never wait -- the reader
must stay responsive so that ``cancel`` works even while audio is backed up -- but they
are capped too, so a client that floods requests without reading replies gets closed
instead of growing memory.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["OutItem", "Outbox", "OutboxOverflow"]


class OutboxOverflow(RuntimeError):
    """Too many events queued for a client that does not read."""


@dataclass
class OutItem:
    kind: str  # "frame" | "event" | "done" | "close"
    data: Any = None  # frame payload, event JSON text, or (code, reason) for close
    utt: Any = None  # the Utterance the item belongs to (skipped if it was cancelled)
    ms: float = 0.0  # audio duration of a frame
    sample_offset: int = 0
    flags: int = 0
    audible: bool = False  # the frame holds the utterance's first audible sample


class Outbox:
    def __init__(self, max_audio_ms: float, max_events: int = 1000) -> None:
        self.max_audio_ms = max_audio_ms
        self.max_events = max_events
        self._items: deque[OutItem] = deque()
        self.audio_ms = 0.0
        self._events = 0
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put_audio(self, item: OutItem) -> None:
        """Queue a frame, waiting while ``max_audio_ms`` of audio is already queued."""
        while self.audio_ms >= self.max_audio_ms:
            self._space.clear()
            await self._space.wait()
        self._items.append(item)
        self.audio_ms += item.ms
        self._readable.set()

    def put(self, item: OutItem) -> None:
        """Queue an event/close item without waiting."""
        if self._events >= self.max_events:
            raise OutboxOverflow(f"more than {self.max_events} events queued for a client that is not reading")
        self._items.append(item)
        self._events += 1
        self._readable.set()

    def put_front(self, item: OutItem) -> None:
        """For fatal errors: goes out before anything queued."""
        self._items.appendleft(item)
        self._events += 1
        self._readable.set()

    async def get(self) -> OutItem:
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._account_removed(item)
        return item

    def purge(self, drop: Callable[[OutItem], bool]) -> float:
        """Remove matching items; returns the milliseconds of audio dropped."""
        kept: deque[OutItem] = deque()
        dropped_ms = 0.0
        for item in self._items:
            if drop(item):
                self._account_removed(item)
                dropped_ms += item.ms if item.kind == "frame" else 0.0
            else:
                kept.append(item)
        self._items = kept
        return dropped_ms

    def _account_removed(self, item: OutItem) -> None:
        if item.kind == "frame":
            self.audio_ms -= item.ms
            if self.audio_ms < self.max_audio_ms:
                self._space.set()
        else:
            self._events -= 1
