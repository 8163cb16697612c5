"""Where an agent plugin's audio comes from: an in-process synthesizer or a remote server.

The contract is one async generator per utterance, ``stream(text, sample_rate)``,
yielding 16-bit mono PCM at the rate the framework asked for, as it is generated.
Closing the generator early (``aclose``, or the consuming task being cancelled on a
barge-in) must stop generation at once: an interrupted agent that keeps a GPU busy
on words nobody will hear slows every other call on that box.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from voicestream.client import AudioChunk, ServerError, StreamSession, VoiceStreamClient
from voicestream.server.audio import StreamingResampler, pcm16_encode
from voicestream.server.synth import SegmentStats, SynthesisOptions, Synthesizer
from voicestream.threaded import ThreadedStream

__all__ = ["LocalBackend", "RemoteBackend", "SpeechBackend"]


class SpeechBackend(Protocol):
    def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class LocalBackend:
    """A :class:`Synthesizer` in this process; its blocking ``stream`` runs on a worker thread.

    The worker runs at most ``max_ahead`` chunks ahead of the consumer, and a cancelled
    consumer sets the synthesizer's cancel event, so it stops within one model step.
    """

    def __init__(self, synthesizer: Synthesizer, options: SynthesisOptions | None = None, *, max_ahead: int = 4) -> None:
        self.synthesizer = synthesizer
        self.options = options or SynthesisOptions()
        self.max_ahead = max_ahead
        self.last_stats: SegmentStats | None = None  # of the latest utterance (finished or cancelled)

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        synth = self.synthesizer
        stats = SegmentStats()
        self.last_stats = stats
        resampler = StreamingResampler(synth.sample_rate, sample_rate)
        work = ThreadedStream(
            lambda cancel: synth.stream(text, self.options, cancel, stats), max_ahead=self.max_ahead
        )
        try:
            async for pcm in work:
                out = resampler.push(pcm)
                if out.size:
                    yield pcm16_encode(out)
            tail = resampler.flush()
            if tail.size:
                yield pcm16_encode(tail)
        finally:
            work.cancel()  # no-op when it finished; otherwise stop the model now

    async def aclose(self) -> None:
        """Nothing to release: the synthesizer belongs to the caller."""


class RemoteBackend:
    """A ``voicestream serve`` reached with :class:`VoiceStreamClient`.

    One websocket session is kept open across utterances (no handshake per sentence);
    an utterance is ``text`` + ``flush``, read until ``flushed``.  An utterance abandoned
    midway closes the session instead of cancelling in place: the next utterance then
    starts on a fresh socket and can never receive a stale frame of the old one.
    Concurrent utterances take turns (a lock), since they share that one session.
    """

    def __init__(self, client: VoiceStreamClient) -> None:
        self.client = client
        self._stack: contextlib.AsyncExitStack | None = None
        self._session: StreamSession | None = None
        self._rate: int | None = None
        self._lock = asyncio.Lock()

    async def _ensure(self, sample_rate: int) -> StreamSession:
        if self._session is not None and (self._session.closed or self._rate != sample_rate):
            await self.aclose()
        if self._session is None:
            stack = contextlib.AsyncExitStack()
            self._session = await stack.enter_async_context(self.client.session(sample_rate=sample_rate))
            self._stack, self._rate = stack, sample_rate
        return self._session

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        async with self._lock:
            async for pcm in self._utterance(text, sample_rate):
                yield pcm

    async def _utterance(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        session = await self._ensure(sample_rate)
        complete = False
        try:
            await session.send_text(text)
            await session.flush()
            async for item in session.events(until=("flushed", "interrupted")):
                if isinstance(item, AudioChunk):
                    yield item.pcm
                elif item.get("type") == "error":
                    raise ServerError(str(item.get("code")), str(item.get("message")))
            complete = True
        finally:
            if not complete:
                await self.aclose()

    async def aclose(self) -> None:
        stack, self._stack, self._session = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def choose_backend(
    synthesizer: Synthesizer | None, client: VoiceStreamClient | None, backend: SpeechBackend | None,
    options: SynthesisOptions | None = None,
) -> SpeechBackend:
    """The one backend a framework plugin was given: in-process, remote, or ready-made."""
    if sum(x is not None for x in (synthesizer, client, backend)) != 1:
        raise ValueError("give exactly one of synthesizer=, client= or backend=")
    if backend is not None:
        return backend
    return LocalBackend(synthesizer, options) if synthesizer is not None else RemoteBackend(client)
