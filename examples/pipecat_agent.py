"""A Pipecat pipeline speaking through voicestream: LLM-style text in, WAV out.

    pip install 'voicestream[pipecat]'
    python examples/pipecat_agent.py "Hello there. This arrives token by token." -o out.wav
    voicestream serve --test-voice &   # or use a remote server:
    python examples/pipecat_agent.py "Hello." --url http://127.0.0.1:8080 -o out.wav

The text is fed as an LLM would produce it (``LLMFullResponseStartFrame``, one
``TextFrame`` per word, ``LLMFullResponseEndFrame``).  In a real agent, replace the
feeder with your transport's input + STT + LLM, and the WAV sink with the transport's
output: ``Pipeline([transport.input(), stt, user_agg, llm, tts, transport.output(), ...])``.
Without ``--url`` the formant test voice runs in this process (no model download).
"""
from __future__ import annotations

import argparse
import asyncio
import wave

from pipecat.frames.frames import (
    EndFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TextFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from voicestream.adapters.agents.pipecat import VoiceStreamTTSService
from voicestream.client import VoiceStreamClient


class WavSink(FrameProcessor):
    """Collects the TTS audio (stands in for a transport's output)."""

    def __init__(self) -> None:
        super().__init__()
        self.pcm = bytearray()
        self.sample_rate = 0

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.pcm += frame.audio
            self.sample_rate = frame.sample_rate
        await self.push_frame(frame, direction)


def make_tts(url: str | None, api_key: str | None) -> VoiceStreamTTSService:
    if url:
        return VoiceStreamTTSService(client=VoiceStreamClient(url, api_key=api_key))
    from voicestream.server.formant import default_test_synthesizer

    return VoiceStreamTTSService(synthesizer=default_test_synthesizer())


async def run(args: argparse.Namespace) -> dict:
    sink = WavSink()
    worker = PipelineWorker(
        Pipeline([make_tts(args.url, args.api_key), sink]),
        params=PipelineParams(audio_out_sample_rate=args.sample_rate, enable_metrics=True),
        cancel_on_idle_timeout=False,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker, _frame):
        started.set()

    async def feed() -> None:
        await started.wait()
        await worker.queue_frame(LLMFullResponseStartFrame())
        for word in args.text.split(" "):
            await worker.queue_frame(TextFrame(word + " "))
        await worker.queue_frame(LLMFullResponseEndFrame())
        await worker.queue_frame(EndFrame())  # EndFrame waits for queued speech to finish

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), feed())
    with wave.open(args.output, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(args.sample_rate)
        w.writeframes(bytes(sink.pcm))
    return {"samples": len(sink.pcm) // 2, "sample_rate": args.sample_rate}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text")
    p.add_argument("-o", "--output", default="pipecat_agent.wav")
    p.add_argument("--url", help="a running `voicestream serve` (default: in-process test voice)")
    p.add_argument("--api-key")
    p.add_argument("--sample-rate", type=int, default=24000)
    stats = asyncio.run(run(p.parse_args(argv)))
    print(f"wrote {stats['samples'] / stats['sample_rate']:.2f} s of audio")
    return stats


if __name__ == "__main__":
    main()
