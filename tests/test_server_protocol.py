"""Wire format and audio plumbing, without a socket: message validation, frame header,
streaming resampler, encoders, per-utterance framing, metrics exposition."""
import json
import warnings

import numpy as np
import pytest

from voicestream.codec import resample
from voicestream.server import protocol as P
from voicestream.server.audio import (
    StreamingResampler,
    UtteranceAudio,
    mulaw_decode,
    mulaw_encode,
    pcm16_decode,
    pcm16_encode,
    wav_header,
)
from voicestream.server.metrics import ServerMetrics


def parse(obj):
    return P.parse_client_message(json.dumps(obj) if not isinstance(obj, str) else obj)


def test_valid_messages():
    s = parse({"type": "start", "encoding": "mulaw", "sample_rate": 8000, "rule": "sampling", "seed": 5})
    assert s == P.Start(encoding="mulaw", sample_rate=8000, rule="sampling", temperature=1.0, seed=5)
    assert parse({"type": "text", "text": "hi"}) == P.Text("hi")
    assert isinstance(parse({"type": "flush"}), P.Flush)
    assert isinstance(parse({"type": "cancel"}), P.Cancel)
    assert isinstance(parse({"type": "close"}), P.Close)


@pytest.mark.parametrize(
    "raw, code",
    [
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('"start"', "invalid_message"),
        ({"text": "no type"}, "invalid_message"),
        ({"type": 3}, "invalid_message"),
        ({"type": "speak"}, "unknown_type"),
        ({"type": "text"}, "invalid_field"),
        ({"type": "text", "text": 5}, "invalid_field"),
        ({"type": "text", "text": ["a"]}, "invalid_field"),
        ({"type": "text", "text": "a", "extra": 1}, "invalid_field"),
        ({"type": "flush", "now": True}, "invalid_field"),
        ({"type": "start", "gamma": "4"}, "invalid_field"),
        ({"type": "start", "gamma": True}, "invalid_field"),
        ({"type": "start", "gamma": 4.0}, "invalid_field"),
        ({"type": "start", "gamma": 0}, "invalid_field"),
        ({"type": "start", "sample_rate": 7999}, "invalid_field"),
        ({"type": "start", "sample_rate": 96000}, "invalid_field"),
        ({"type": "start", "encoding": "opus"}, "invalid_field"),
        ({"type": "start", "rule": "beam"}, "invalid_field"),
        ({"type": "start", "rule": "greedy", "temperature": 0.7}, "invalid_field"),
        ({"type": "start", "rule": "sampling", "temperature": 0}, "invalid_field"),
        ({"type": "start", "seed": -1}, "invalid_field"),
        ({"type": "start", "speed": 9}, "invalid_field"),
        ({"type": "start", "frame_ms": 5}, "invalid_field"),
        ({"type": "start", "voice": None}, "invalid_field"),
        ({"type": "start", "volume": 3}, "invalid_field"),
        ('{"type": "start", "temperature": NaN}', "invalid_field"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),  # deep nesting: RecursionError, not a crash
    ],
)
def test_invalid_messages(raw, code):
    with pytest.raises(P.ProtocolError) as err:
        parse(raw)
    assert err.value.code == code


def test_unicode_oddities_are_text_not_errors():
    assert parse({"type": "text", "text": "caf\u00e9 \U0001f600 \u200b\u202e"}).text.startswith("caf\u00e9")
    # a lone surrogate is valid JSON but not encodable; it is replaced, not fatal
    t = parse('{"type": "text", "text": "a\\ud800b"}').text
    t.encode("utf-8")
    assert t[0] == "a" and t[-1] == "b"


def test_frame_header_round_trip_and_layout():
    frame = P.pack_frame(7, 2, 48000, P.FLAG_UTTERANCE_START, b"\x01\x02")
    assert len(frame) == P.FRAME_HEADER.size + 2 == 18
    assert frame[:2] == b"VS" and frame[2] == 1 and frame[3] == 1
    assert int.from_bytes(frame[4:8], "little") == 7
    assert int.from_bytes(frame[8:12], "little") == 2
    assert int.from_bytes(frame[12:16], "little") == 48000
    header, payload = P.unpack_frame(frame)
    assert (header.seq, header.utterance, header.sample_offset, header.utterance_start, payload) == (7, 2, 48000, True, b"\x01\x02")
    with pytest.raises(ValueError):
        P.unpack_frame(b"XX" + frame[2:])


@pytest.mark.parametrize("src, dst", [(8000, 8000), (8000, 16000), (8000, 24000), (8000, 22050), (8000, 48000), (24000, 8000)])
def test_streaming_resampler_equals_one_shot(src, dst):
    rng = np.random.default_rng(src + dst)
    x = rng.standard_normal(4000).astype(np.float32) * 0.3
    r = StreamingResampler(src, dst)
    parts, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, 500))
        parts.append(r.push(x[i : i + n]))
        i += n
    parts.append(r.flush())
    y = np.concatenate(parts)
    ref = resample(x, src, dst)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_mulaw_matches_g711_reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # CPython's G.711 (removed in 3.13)
    x = np.arange(-32768, 32768, dtype=np.float64) / 32768
    assert mulaw_encode(x) == audioop.lin2ulaw(pcm16_encode(x), 2)
    codes = bytes(range(256))
    np.testing.assert_array_equal(mulaw_decode(codes), pcm16_decode(audioop.ulaw2lin(codes, 2)))


def test_mulaw_round_trip_error_is_small():
    x = np.sin(np.linspace(0, 60, 8000)) * 0.5
    err = np.abs(mulaw_decode(mulaw_encode(x)) - x)
    assert err.max() < 0.02  # 8-bit companding: ~1.5% at full scale, far less near zero


def test_wav_header_streaming_sizes():
    h = wav_header(24000)
    assert h[:4] == b"RIFF" and h[8:16] == b"WAVEfmt " and len(h) == 44
    assert int.from_bytes(h[24:28], "little") == 24000
    assert h[40:44] == b"\xff\xff\xff\xff"


def test_utterance_audio_trims_leading_silence_keeps_preroll():
    ua = UtteranceAudio(8000, 8000, "pcm_s16le", frame_ms=20, preroll_ms=10)
    silence = np.full(400, 0.001, dtype=np.float32)
    assert ua.push(silence) is None  # nothing audible yet: nothing to send
    tone = (0.3 * np.sin(np.arange(800) / 3)).astype(np.float32)
    chunk = ua.push(np.concatenate([silence, tone]))
    assert chunk is not None and chunk.audible and chunk.sample_offset == 0
    audio = np.concatenate([pcm16_decode(p) for p in chunk.payloads])
    first = np.flatnonzero(np.abs(audio) > 0.01)[0]
    assert first == 80  # exactly preroll_ms of the quiet lead-in kept
    assert all(n <= 160 for n in chunk.samples)  # frames of at most frame_ms
    nxt = ua.push(tone)
    assert not nxt.audible and nxt.sample_offset == sum(chunk.samples)


def test_metrics_exposition_format():
    m = ServerMetrics()
    m.ttfa.observe(0.08)
    m.ttfa.observe(0.4)
    m.errors.inc(1, "invalid_json")
    text = m.render()
    assert 'voicestream_ttfa_seconds_bucket{le="0.1"} 1' in text
    assert 'voicestream_ttfa_seconds_bucket{le="+Inf"} 2' in text
    assert "voicestream_ttfa_seconds_count 2" in text
    assert 'voicestream_errors_total{code="invalid_json"} 1' in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2, line


async def test_outbox_bounds_audio_and_events():
    import asyncio

    from voicestream.server.outbox import Outbox, OutboxOverflow, OutItem

    box = Outbox(max_audio_ms=100, max_events=3)
    await box.put_audio(OutItem("frame", b"a", ms=60))
    await box.put_audio(OutItem("frame", b"b", ms=60))  # 120 ms queued: the next put waits
    blocked = asyncio.ensure_future(box.put_audio(OutItem("frame", b"c", ms=60)))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "a full outbox must hold the producer back"
    assert (await box.get()).data == b"a"  # 60 ms left: room again
    await asyncio.wait_for(blocked, 1)
    for i in range(3):
        box.put(OutItem("event", str(i)))
    with pytest.raises(OutboxOverflow):
        box.put(OutItem("event", "flood"))
    dropped = box.purge(lambda it: it.kind == "frame")
    assert dropped == 120 and box.audio_ms == 0
    assert [(await box.get()).data for _ in range(3)] == ["0", "1", "2"]
