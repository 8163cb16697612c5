"""Barge-in: real speech on the mic channel stops the voice; silence and noise do not."""
import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from server_util import running_server, ws_client

from voicestream.codec import resample
from voicestream.server.audio import pcm16_encode
from voicestream.server.synth import SegmentStats, SynthesisOptions
from voicestream.server.vad import BargeInDetector, VadConfig, voicing

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLIP_DIR = Path("/usr/share/codec2/raw")  # apt-get install codec2-examples
CLIPS = ("hts1a.raw", "hts2a.raw", "morig.raw", "forig.raw", "big_dog.raw", "cq_ref.raw")
SR = 16000
LONG = "I will keep talking for quite a while, so you can interrupt me whenever you like. " * 3


def real_speech() -> list[np.ndarray]:
    clips = [
        resample(np.fromfile(CLIP_DIR / c, dtype="<i2").astype(np.float32) / 32768.0, 8000, SR)
        for c in CLIPS
        if (CLIP_DIR / c).is_file()
    ]
    if not clips:
        pytest.skip("no recorded speech: apt-get install codec2-examples")
    return clips


def noises(seconds: float = 3.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = int(SR * seconds)
    spec = np.fft.rfft(rng.standard_normal(n))
    k = np.arange(spec.size)
    k[0] = 1
    pink = np.fft.irfft(spec / np.sqrt(k), n)
    brown = np.fft.irfft(spec / k, n)
    return {
        "silence": np.zeros(n),
        "white": 0.1 * rng.standard_normal(n),
        "loud_white": 0.5 * rng.standard_normal(n).clip(-2, 2),
        "pink": 0.5 * pink / np.abs(pink).max(),
        "brown": 0.5 * brown / np.abs(brown).max(),
    }


def feed(detector: BargeInDetector, audio: np.ndarray, frame_ms: int = 20) -> list[int]:
    data = pcm16_encode(audio)
    step = SR * frame_ms // 1000 * 2
    return [i // step for i in range(0, len(data), step) if detector.feed(data[i : i + step])]


def test_voicing_separates_speech_from_noise():
    clip = real_speech()[0]
    frames = [clip[i : i + 640] for i in range(0, clip.size - 640, 320)]
    speech_scores = np.array([voicing(f) for f in frames if np.sqrt(np.mean(f**2)) > 0.02])
    noise_scores = np.array([voicing(n[i : i + 640]) for n in noises(1).values() for i in range(0, 15000, 640)])
    assert np.percentile(speech_scores, 75) > 0.6
    assert noise_scores.max() < 0.35


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_detector_fires_on_every_real_speech_clip_within_half_a_second(frame_ms):
    for clip in real_speech():
        fired = feed(BargeInDetector(VadConfig(frame_ms=frame_ms)), clip, frame_ms)
        assert fired, "speech must trigger a barge-in"
        onset = np.flatnonzero(np.abs(clip) > 0.02)[0] / SR
        assert fired[0] * frame_ms / 1000 - onset < 0.5


@pytest.mark.parametrize("aggressiveness", [0, 2, 3])
def test_detector_ignores_silence_and_noise(aggressiveness):
    for name, audio in noises().items():
        assert feed(BargeInDetector(VadConfig(aggressiveness=aggressiveness)), audio) == [], name


def test_hangover_needs_n_of_m_frames():
    clip = real_speech()[0]
    eager = feed(BargeInDetector(VadConfig(min_voiced=2, window=10)), clip)
    strict = feed(BargeInDetector(VadConfig(min_voiced=8, window=10)), clip)
    assert eager and (not strict or strict[0] > eager[0])


async def send_mic(c, audio: np.ndarray, *, speedup: float = 4.0, frame_ms: int = 20) -> None:
    data = pcm16_encode(audio)
    step = SR * frame_ms // 1000 * 2
    for i in range(0, len(data), step):
        await c.ws.send_bytes(data[i : i + step])
        await asyncio.sleep(frame_ms / 1000 / speedup)
        if c.rx.of("interrupted"):
            return


async def test_barge_in_with_real_speech_interrupts_like_cancel(paced_voice):
    speech = real_speech()[0]
    quiet = noises(0.6)
    async with running_server([paced_voice]) as (server, url), ws_client(url) as c:
        await c.send(type="start")
        await c.send(type="text", text=LONG)
        await c.send(type="flush")
        await c.wait_for("audio_start")
        await send_mic(c, np.concatenate([quiet["silence"], quiet["pink"]]))
        assert not c.rx.of("interrupted"), "silence and noise must not interrupt"
        await send_mic(c, speech)
        ev = await c.wait_for("interrupted", timeout=5)
        assert ev["reason"] == "barge_in" and ev["utterances"] == [1]
        at = c.rx.order.index("interrupted")
        await asyncio.sleep(0.3)
        assert "frame" not in c.rx.order[at:] and not c.rx.of("done")
        assert server.metrics.generations.value == 0
        assert server.metrics.barge_ins.get() == 1
        # the conversation goes on
        await c.send(type="text", text="Sorry, go ahead.")
        await c.send(type="flush")
        assert (await c.wait_for("done"))["utterance"] == 2


async def test_noise_on_the_line_never_interrupts(paced_voice, formant_voice):
    loud = noises(2.0)
    async with running_server([formant_voice, paced_voice]) as (_, url):
        async with ws_client(url) as c:
            await c.send(type="start", voice="paced")
            await c.send(type="text", text="A sentence spoken over a noisy line, all the way to the end.")
            await c.send(type="flush")
            await c.wait_for("audio_start")
            for name in ("white", "loud_white", "pink", "brown", "silence"):
                await send_mic(c, loud[name], speedup=8.0)
            await c.wait_for("done", timeout=10)
            assert not c.rx.of("interrupted")


async def test_speech_while_quiet_or_disabled_does_not_interrupt(formant_voice):
    speech = real_speech()[0]
    async with running_server([formant_voice]) as (_, url):
        async with ws_client(url) as c:
            await c.send(type="start")
            await c.wait_for("started")
            await send_mic(c, speech, speedup=8.0)  # nothing is being said: nothing to interrupt
            await asyncio.sleep(0.1)
            assert not c.rx.of("interrupted")
        async with ws_client(url) as c:
            await c.send(type="start", barge_in=False)
            await c.send(type="text", text=LONG)
            await c.send(type="flush")
            await c.wait_for("audio_start")
            await send_mic(c, speech, speedup=8.0)
            await c.wait_for("done")
            assert not c.rx.of("interrupted")


def test_formant_voice_is_heard_as_voiced_speech(formant_voice):
    """The test voice must look like speech to the VAD, or barge-in tests would prove nothing
    about echo: its own audio at 16 kHz triggers the detector (so clients must cancel echo)."""
    stats = SegmentStats()
    pcm = np.concatenate(list(formant_voice.stream("Hello there, how are you?", SynthesisOptions(), threading.Event(), stats)))
    assert feed(BargeInDetector(), resample(pcm, 8000, SR))
