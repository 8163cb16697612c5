"""Pipecat ``TTSService`` backed by voicestream (``pip install 'voicestream[pipecat]'``).

    from voicestream.adapters.agents.pipecat import VoiceStreamTTSService
    tts = VoiceStreamTTSService(synthesizer=FormantSynthesizer())          # in-process
    tts = VoiceStreamTTSService(client=VoiceStreamClient("http://gpu:8080"))  # remote

Pipecat aggregates the LLM's tokens into sentences and calls :meth:`run_tts` once per
sentence; each PCM chunk is yielded as a ``TTSAudioRawFrame`` the moment the
speculative decoder produces it, so the first one (which stops the TTFB metric) comes
long before the sentence is finished.  On an interruption pipecat cancels the task
running ``run_tts``; the backend's generator is closed in ``finally``, which cancels
the model (local) or drops the session (remote), so no compute is spent on speech
nobody will hear.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator

from pipecat.frames.frames import EndFrame, CancelFrame, ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from voicestream.client import VoiceStreamClient, VoiceStreamError
from voicestream.server.synth import SynthesisOptions, Synthesizer

from .backends import SpeechBackend, choose_backend

__all__ = ["VoiceStreamTTSService"]


class VoiceStreamTTSService(TTSService):
    """Streaming TTS from a local :class:`Synthesizer` or a remote voicestream server.

    Exactly one of ``synthesizer`` / ``client`` / ``backend`` is given.  ``sample_rate``
    defaults to the pipeline's output rate (pipecat sets it at ``StartFrame``); audio
    is resampled to it by the backend (locally) or the server (remotely).
    """

    def __init__(
        self,
        *,
        synthesizer: Synthesizer | None = None,
        client: VoiceStreamClient | None = None,
        backend: SpeechBackend | None = None,
        options: SynthesisOptions | None = None,
        sample_rate: int | None = None,
        **kwargs,
    ) -> None:
        backend = choose_backend(synthesizer, client, backend, options)
        voice = synthesizer.name if synthesizer is not None else (client.voice if client is not None else None)
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=sample_rate,
            settings=TTSSettings(model="voicestream", voice=voice, language=None),
            **kwargs,
        )
        self._backend = backend

    @property
    def backend(self) -> SpeechBackend:
        return self._backend

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Yield one ``TTSAudioRawFrame`` per generated chunk (s16 mono at ``self.sample_rate``)."""
        await self.start_tts_usage_metrics(text)
        audio = self._backend.stream(text, self.sample_rate)
        first = True
        try:
            async for pcm in audio:
                if first:
                    await self.stop_ttfb_metrics()
                    first = False
                yield TTSAudioRawFrame(audio=pcm, sample_rate=self.sample_rate, num_channels=1, context_id=context_id)
        except VoiceStreamError as exc:
            yield ErrorFrame(error=f"voicestream: {exc}")
        finally:
            await audio.aclose()  # cancelled mid-sentence: stop the model / drop the session now
            await self.stop_ttfb_metrics()

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._backend.aclose()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._backend.aclose()
