"""The LiveKit Agents TTS plugin with the real livekit-agents package (no LiveKit server:
the TTS streams run on their own)."""
import asyncio
import threading
import time

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from server_util import running_server  # noqa: E402

from voicestream.adapters.agents.backends import LocalBackend  # noqa: E402
from voicestream.adapters.agents.livekit import VoiceStreamTTS  # noqa: E402
from voicestream.client import VoiceStreamClient  # noqa: E402
from voicestream.server.synth import SegmentStats, SynthesisOptions  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RATE = 24000


def samples_of(voice, text, rate=RATE) -> float:
    n = sum(c.size for c in voice.stream(text, SynthesisOptions(), threading.Event(), SegmentStats()))
    return n * rate / voice.sample_rate


def pcm(events) -> np.ndarray:
    return np.concatenate([np.frombuffer(bytes(e.frame.data), dtype=np.int16) for e in events])


async def test_capabilities_and_chunked_synthesize(formant_voice):
    engine = VoiceStreamTTS(synthesizer=formant_voice, sample_rate=RATE)
    assert engine.capabilities.streaming is True
    async with engine.synthesize("Hello there.") as stream:
        events = [e async for e in stream]
    assert len(events) > 3, "audio must come in many frames, as generated"
    assert {(e.frame.sample_rate, e.frame.num_channels) for e in events} == {(RATE, 1)}
    audio = pcm(events)
    want = samples_of(formant_voice, "Hello there.")
    assert abs(audio.size - want) < 0.02 * want + RATE * 0.04  # last frame may be padded/partial
    assert np.sqrt(np.mean((audio / 32768.0) ** 2)) > 0.03


async def test_stream_speaks_first_sentence_before_input_ends(formant_voice):
    engine = VoiceStreamTTS(synthesizer=formant_voice, sample_rate=RATE)
    stream = engine.stream()
    for word in "Hello there. And".split(" "):
        stream.push_text(word + " ")
    first = await asyncio.wait_for(stream.__anext__(), 10)  # only the first sentence is certain yet
    rest_words = "then a second sentence".split(" ")
    for word in rest_words:
        stream.push_text(" " + word)
    stream.end_input()  # releases the unfinished second sentence
    events = [first] + [e async for e in stream]
    await stream.aclose()
    audio = pcm(events)
    want = samples_of(formant_voice, "Hello there.") + samples_of(formant_voice, "And then a second sentence")
    assert abs(audio.size - want) < 0.02 * want + RATE * 0.08
    assert len({e.segment_id for e in events}) == 1 and events[-1].is_final


async def test_aclose_cancels_generation(paced_voice):
    backend = LocalBackend(paced_voice)
    engine = VoiceStreamTTS(backend=backend, sample_rate=RATE)
    stream = engine.stream()
    stream.push_text("This sentence is long enough to still be generating when the agent is interrupted.")
    stream.end_input()
    t0 = time.perf_counter()
    await asyncio.wait_for(stream.__anext__(), 10)
    await stream.aclose()
    for _ in range(100):  # the worker thread notices the cancel within one model step
        if backend.last_stats.finish_reason is not None:
            break
        await asyncio.sleep(0.02)
    assert backend.last_stats.finish_reason == "cancelled"
    full = samples_of(paced_voice, "This sentence is long enough to still be generating when the agent is interrupted.")
    assert backend.last_stats.audio_samples < 0.6 * full * paced_voice.sample_rate / RATE
    assert time.perf_counter() - t0 < 3


async def test_remote_backend_stream(formant_voice):
    async with running_server([formant_voice]) as (server, url):
        engine = VoiceStreamTTS(client=VoiceStreamClient(url), sample_rate=16000)
        stream = engine.stream()
        stream.push_text("Hello there. ")
        stream.push_text("Second one.")
        stream.end_input()
        events = [e async for e in stream]
        await stream.aclose()
        await engine.aclose()
        assert server.metrics.sessions_total.get() == 1
    want = samples_of(formant_voice, "Hello there.", 16000) + samples_of(formant_voice, "Second one.", 16000)
    assert {e.frame.sample_rate for e in events} == {16000}
    assert 0.7 * want < pcm(events).size <= want + 16000 * 0.08  # server trims lead-in silence
