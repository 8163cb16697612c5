"""The Pipecat TTSService inside a real pipecat pipeline (PipelineWorker + WorkerRunner)."""
import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("pipecat")

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    MetricsFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402
from server_util import running_server  # noqa: E402

from voicestream.adapters.agents.backends import LocalBackend  # noqa: E402
from voicestream.adapters.agents.pipecat import VoiceStreamTTSService  # noqa: E402
from voicestream.client import VoiceStreamClient  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Collector(FrameProcessor):
    """Records every downstream frame (with arrival time) and lets a test react to one."""

    def __init__(self, on_frame=None):
        super().__init__()
        self.frames: list[tuple[float, Frame]] = []
        self.on_frame = on_frame

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append((time.perf_counter(), frame))
            if self.on_frame is not None:
                await self.on_frame(frame)
        await self.push_frame(frame, direction)

    def of(self, kind):
        return [f for _, f in self.frames if isinstance(f, kind)]


async def run_pipeline(tts, frames, *, on_frame=None, rate=24000, end_after=0.0):
    collector = Collector()
    worker = PipelineWorker(
        Pipeline([tts, collector]),
        params=PipelineParams(audio_out_sample_rate=rate, enable_metrics=True),
        cancel_on_idle_timeout=False,
    )
    if on_frame is not None:
        collector.on_frame = lambda f: on_frame(f, worker)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_w, _f):
        started.set()

    async def feed():
        await asyncio.wait_for(started.wait(), 10)
        for f in frames:
            await worker.queue_frame(f)
        await asyncio.sleep(end_after)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), feed()), 30)
    return collector


def pcm_of(collector) -> np.ndarray:
    return np.frombuffer(b"".join(f.audio for f in collector.of(TTSAudioRawFrame)), dtype="<i2")


def expected_samples(voice, text, rate):
    from voicestream.server.synth import SegmentStats, SynthesisOptions
    import threading

    n = sum(c.size for c in voice.stream(text, SynthesisOptions(), threading.Event(), SegmentStats()))
    return n * rate / voice.sample_rate


async def test_local_backend_streams_llm_text(formant_voice):
    tts = VoiceStreamTTSService(synthesizer=formant_voice)
    words = ["Hello ", "there. ", "This ", "is ", "a ", "streaming ", "test."]
    frames = [LLMFullResponseStartFrame(), *[TextFrame(w) for w in words], LLMFullResponseEndFrame()]
    c = await run_pipeline(tts, frames)
    audio = c.of(TTSAudioRawFrame)
    assert len(audio) > 4, "audio must arrive in many chunks, as generated"
    assert {(f.sample_rate, f.num_channels) for f in audio} == {(24000, 1)}
    pcm = pcm_of(c)
    want = expected_samples(formant_voice, "Hello there.", 24000) + expected_samples(
        formant_voice, "This is a streaming test.", 24000
    )
    assert abs(pcm.size - want) < 0.02 * want
    assert np.sqrt(np.mean((pcm / 32768.0) ** 2)) > 0.03
    assert c.of(TTSStartedFrame) and c.of(TTSStoppedFrame)
    ttfb = [d.value for m in c.of(MetricsFrame) for d in m.data if isinstance(d, TTFBMetricsData) and d.model]
    assert ttfb and all(0 < v < 5 for v in ttfb)  # stopped on the first chunk, not at the end


async def test_interruption_cancels_local_generation(paced_voice):
    backend = LocalBackend(paced_voice)
    tts = VoiceStreamTTSService(backend=backend)
    text = "This sentence is long enough to still be generating when the user barges in, on and on."
    interrupted = asyncio.Event()

    async def on_frame(frame, worker):
        if isinstance(frame, TTSAudioRawFrame) and not interrupted.is_set():
            interrupted.set()
            await worker.queue_frame(InterruptionFrame())

    t0 = time.perf_counter()
    c = await run_pipeline(tts, [TTSSpeakFrame(text)], on_frame=on_frame, end_after=0.5)
    assert interrupted.is_set()
    assert backend.last_stats.finish_reason == "cancelled"
    full = expected_samples(paced_voice, text, 24000)
    assert pcm_of(c).size < 0.5 * full
    assert time.perf_counter() - t0 < full / 24000 * 0.3 + 3  # did not wait for the whole sentence


async def test_remote_backend_reuses_one_session(formant_voice):
    async with running_server([formant_voice]) as (server, url):
        tts = VoiceStreamTTSService(client=VoiceStreamClient(url))
        c = await run_pipeline(tts, [TTSSpeakFrame("Hello there."), TTSSpeakFrame("Second one.")], rate=16000)
        sessions = server.metrics.sessions_total.get()
    audio = c.of(TTSAudioRawFrame)
    assert {f.sample_rate for f in audio} == {16000}
    want = expected_samples(formant_voice, "Hello there.", 16000) + expected_samples(formant_voice, "Second one.", 16000)
    # the server trims each utterance's leading silence to 20 ms of pre-roll
    assert 0.7 * want < pcm_of(c).size <= want + 100
    assert len(c.of(TTSStoppedFrame)) >= 1
    assert sessions == 1, "both sentences must go over one websocket session"
