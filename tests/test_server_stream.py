"""End-to-end websocket streaming against a real server on 127.0.0.1."""
import asyncio

import numpy as np
import pytest
from server_util import running_server, speak, ws_client

from voicestream.server.audio import first_audible
from voicestream.server.protocol import FLAG_SEGMENT_START, FLAG_UTTERANCE_START

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXT = "Hello there. This is a streaming test, with words arriving one by one."


def check_stream(rx, *, rate, encoding="pcm_s16le", utterances=(1,)):
    """Frames are gap-free and contiguous; events come in protocol order."""
    assert rx.seqs() == list(range(len(rx.frames))), "seq numbers must be 0..n-1 without gaps"
    for utt in utterances:
        frames = [(h, p) for h, p in rx.frames if h.utterance == utt]
        assert frames, f"no audio for utterance {utt}"
        bps = 2 if encoding == "pcm_s16le" else 1
        offset = 0
        for h, p in frames:
            assert h.sample_offset == offset
            offset += len(p) // bps
        assert frames[0][0].flags & FLAG_UTTERANCE_START
        first_frame = rx.order.index("frame")
        assert rx.order[:first_frame] == ["started", "audio_start"]
    done_at = rx.order.index("done")
    assert "frame" not in rx.order[done_at:], "no audio after done"
    assert rx.order[done_at + 1] == "flushed"


@pytest.mark.parametrize("encoding, rate", [("pcm_s16le", 16000), ("mulaw", 8000), ("pcm_s16le", 24000)])
async def test_stream_end_to_end(formant_voice, encoding, rate):
    async with running_server([formant_voice]) as (server, url):
        rx = await speak(url, TEXT, words=True, encoding=encoding, sample_rate=rate)
    assert rx.close_code == 1000
    started = rx.of("started")[0]
    assert (started["encoding"], started["sample_rate"], started["header_bytes"]) == (encoding, rate, 16)
    check_stream(rx, rate=rate, encoding=encoding)
    audio = rx.audio(encoding)
    done = rx.of("done")[0]["stats"]
    # model produced audio_ms at 8 kHz; the wire carries it resampled (minus trimmed lead-in)
    assert abs(audio.size / rate * 1000 - done["audio_ms"]) < 120
    assert first_audible(audio) is not None and first_audible(audio) <= rate * 0.02 + 1  # lead-in trimmed to preroll
    assert np.sqrt(np.mean(audio**2)) > 0.03  # clearly audible
    assert done["ttfa_ms"] > 0 and done["ttfa_ms"] == rx.of("audio_start")[0]["ttfa_ms"]
    assert done["segments"] == 2 and done["tokens"] > 100
    assert done["accepted_per_target_forward"] > 1.0  # speculative decoding committed >1 token per forward
    assert 0 < done["rtf"] < 1.0


async def test_speaks_from_first_boundary_before_flush(formant_voice):
    """Audio starts once the first sentence is certain, while the rest is still being typed."""
    async with running_server([formant_voice], text_stall_release_ms=0) as (_, url):
        async with ws_client(url) as c:
            await c.send(type="start")
            await c.send(type="text", text="one.")
            await asyncio.sleep(0.3)
            assert not c.rx.frames, "'one.' at the buffer end may be '3.5': wait for the next character"
            await c.send(type="text", text="Two three")  # "one.Two" must split
            start = await c.wait_for("audio_start", timeout=5)
            assert start["utterance"] == 1
            await asyncio.sleep(0.3)
            assert not c.rx.of("done"), "'Two three' is unfinished: no done before flush"
            await c.send(type="flush")
            done = await c.wait_for("done")
            assert done["stats"]["segments"] == 2
            segment_starts = [h for h, _ in c.rx.frames if h.flags & FLAG_SEGMENT_START]
            assert len(segment_starts) == 2


async def test_stalled_text_speaks_finished_words(formant_voice):
    """An LLM that stalls mid-sentence: the finished words are spoken, the partial word waits."""
    async with running_server([formant_voice], text_stall_release_ms=200) as (_, url):
        async with ws_client(url) as c:
            await c.send(type="start")
            for w in ("Let", " me", " check", " tha"):
                await c.send(type="text", text=w)
            await c.wait_for("audio_start", timeout=5)  # no punctuation, no flush: released by the stall timer
            await c.send(type="text", text="t for you.")
            await c.send(type="flush")
            done = await c.wait_for("done")
            assert done["stats"]["segments"] == 2  # "Let me check" + "that for you."


async def test_concurrent_sessions_match_single_session_audio(formant_voice):
    """Greedy + fixed seed: a session's audio does not depend on who else is being served."""
    async with running_server([formant_voice]) as (_, url):
        solo = await speak(url, TEXT, sample_rate=16000, seed=3)
        crowd = await asyncio.gather(*[speak(url, TEXT, sample_rate=16000, seed=3) for _ in range(4)])
        sampled = await asyncio.gather(
            *[speak(url, TEXT, sample_rate=16000, rule="sampling", seed=s) for s in (1, 1, 2)]
        )
    ref = b"".join(p for _, p in solo.frames)
    assert len(ref) > 16000
    for rx in crowd:
        assert b"".join(p for _, p in rx.frames) == ref
    a, b, c = (b"".join(p for _, p in rx.frames) for rx in sampled)
    assert a == b, "sampling with the same seed is reproducible"
    assert a != c and a != ref, "a different seed (or rule) gives a different take"


async def test_cancel_drops_audio_and_session_continues(paced_voice):
    long_text = "This sentence is long enough to still be playing when the cancel arrives. " * 3
    async with running_server([paced_voice]) as (server, url):
        async with ws_client(url) as c:
            await c.send(type="start")
            await c.send(type="text", text=long_text)
            await c.send(type="flush")
            await c.wait_for("audio_start")
            await c.send(type="cancel")
            ev = await c.wait_for("interrupted")
            assert ev["reason"] == "cancel" and ev["utterances"] == [1]
            n_at_interrupt = c.rx.order.index("interrupted")
            frames_before = c.rx.order[:n_at_interrupt].count("frame")
            await asyncio.sleep(0.5)
            assert all(h.utterance != 1 for h, _ in c.rx.frames[frames_before:]), "no utterance-1 audio after interrupted"
            assert not c.rx.of("done") and not c.rx.of("flushed")
            assert server.metrics.generations.value == 0, "the generation was stopped"
            # the session is still usable; seq numbers continue without a gap
            await c.send(type="text", text="Next one.")
            await c.send(type="flush")
            done = await c.wait_for("done")
            assert done["utterance"] == 2
            assert c.rx.seqs() == list(range(len(c.rx.frames)))
            await c.send(type="close")
            rx = await c.closed()
    assert rx.close_code == 1000


async def test_close_finishes_buffered_text(formant_voice):
    async with running_server([formant_voice]) as (_, url), ws_client(url) as c:
        await c.send(type="start", sample_rate=8000)
        await c.send(type="text", text="No flush, just close")
        await c.send(type="close")
        await c.send(type="text", text="too late")
        rx = await c.closed()
    assert rx.close_code == 1000
    assert [e["code"] for e in rx.of("error")] == ["closing"]
    assert rx.of("done")[0]["stats"]["segments"] == 1 and rx.frames


async def test_flush_without_text_and_unspeakable_text(formant_voice):
    async with running_server([formant_voice]) as (_, url), ws_client(url) as c:
        await c.send(type="start")
        await c.send(type="flush")
        assert (await c.wait_for("flushed"))["utterance"] is None
        await c.send(type="text", text="\u2026 \U0001f600 ...")  # nothing speakable
        await c.send(type="flush")
        done = await c.wait_for("done")
        assert done["stats"]["audio_ms"] == 0 and done["stats"]["ttfa_ms"] is None
        await c.wait_for("flushed", 2)
        assert not c.rx.frames
