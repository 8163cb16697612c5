"""LiveKit Agents ``tts.TTS`` plugin backed by voicestream (``pip install 'voicestream[livekit]'``).

    from voicestream.adapters.agents.livekit import VoiceStreamTTS
    session = AgentSession(tts=VoiceStreamTTS(client=VoiceStreamClient("http://gpu:8080")), ...)

It declares ``streaming=True``: :meth:`VoiceStreamTTS.stream` accepts the LLM's tokens
as they come (``push_text``), cuts them into sentences with voicestream's own
:class:`~voicestream.text.SentenceSegmenter` (the same rule the server uses: speak as
soon as a sentence end is certain) and pushes each sentence's PCM into the
``AudioEmitter`` while it is being generated.  ``flush``/``end_input`` release an
unfinished sentence.  Closing the stream (the agent was interrupted) cancels the task
in ``_run``; the backend's generator is closed with it, which stops the model
(local) or drops the session (remote).
"""
from __future__ import annotations

import asyncio
import contextlib

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    tts,
    utils,
)

from voicestream.client import ConnectionLostError, VoiceStreamClient, VoiceStreamError
from voicestream.server.synth import SynthesisOptions, Synthesizer
from voicestream.text import SentenceSegmenter

from .backends import SpeechBackend, choose_backend

__all__ = ["VoiceStreamTTS"]


class VoiceStreamTTS(tts.TTS):
    """Streaming TTS from a local :class:`Synthesizer` or a remote voicestream server.

    Exactly one of ``synthesizer`` / ``client`` / ``backend``.  ``frame_size_ms`` is the
    size of the ``AudioFrame`` s handed to LiveKit; small frames keep first-audio latency
    low (the emitter holds audio back until a whole frame is there).
    """

    def __init__(
        self,
        *,
        synthesizer: Synthesizer | None = None,
        client: VoiceStreamClient | None = None,
        backend: SpeechBackend | None = None,
        options: SynthesisOptions | None = None,
        sample_rate: int = 24000,
        frame_size_ms: int = 40,
    ) -> None:
        backend = choose_backend(synthesizer, client, backend, options)
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True), sample_rate=sample_rate, num_channels=1
        )
        self.backend = backend
        self.frame_size_ms = frame_size_ms

    @property
    def model(self) -> str:
        return "voicestream"

    @property
    def provider(self) -> str:
        return "voicestream"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> VoiceStreamChunkedStream:
        return VoiceStreamChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> VoiceStreamSynthesizeStream:
        return VoiceStreamSynthesizeStream(tts=self, conn_options=conn_options)

    async def aclose(self) -> None:
        await self.backend.aclose()

    def _initialize(self, emitter: tts.AudioEmitter, *, stream: bool) -> None:
        """16-bit mono PCM at this TTS's rate, framed in ``frame_size_ms`` pieces."""
        emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=self.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
            frame_size_ms=self.frame_size_ms,
            stream=stream,
        )

    async def _speak(self, text: str, emitter: tts.AudioEmitter) -> None:
        """Push one sentence's PCM as it is generated; map client errors to LiveKit's."""
        try:
            async with contextlib.aclosing(self.backend.stream(text, self.sample_rate)) as audio:
                async for pcm in audio:
                    emitter.push(pcm)
        except ConnectionLostError as exc:  # retryable: LiveKit retries if no audio went out yet
            raise APIConnectionError(f"voicestream: {exc}") from exc
        except VoiceStreamError as exc:
            raise APIError(f"voicestream: {exc}", retryable=False) from exc
        emitter.flush()


class VoiceStreamChunkedStream(tts.ChunkedStream):
    """``synthesize(text)``: the whole text is known; audio still streams out as generated."""

    _tts: VoiceStreamTTS

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        self._tts._initialize(output_emitter, stream=False)
        await self._tts._speak(self.input_text, output_emitter)


class VoiceStreamSynthesizeStream(tts.SynthesizeStream):
    """``stream()``: text arrives token by token; each certain sentence is spoken at once."""

    _tts: VoiceStreamTTS

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        self._tts._initialize(output_emitter, stream=True)
        output_emitter.start_segment(segment_id=utils.shortuuid())
        sentences: asyncio.Queue[str | None] = asyncio.Queue()

        async def segment_input() -> None:
            segmenter = SentenceSegmenter()
            async for data in self._input_ch:
                pieces = segmenter.flush() if isinstance(data, self._FlushSentinel) else segmenter.push(data)
                for piece in pieces:
                    sentences.put_nowait(piece)
            for piece in segmenter.flush():  # end_input
                sentences.put_nowait(piece)
            sentences.put_nowait(None)

        async def speak() -> None:
            while (sentence := await sentences.get()) is not None:
                if sentence.strip():
                    self._mark_started()
                    await self._tts._speak(sentence, output_emitter)
            output_emitter.end_segment()

        tasks = [asyncio.create_task(segment_input()), asyncio.create_task(speak())]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
