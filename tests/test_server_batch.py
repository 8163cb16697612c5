"""`voicestream serve --batch N`: every session of a voice shares one batched decoder,
end to end over real websockets on 127.0.0.1."""
import asyncio
import threading

import numpy as np
import pytest
from server_util import running_server, speak

from test_server_stream import TEXT, check_stream
from voicestream.batch import BatchConfig, BatchedDecoder
from voicestream.cli import build_parser
from voicestream.server.cli import load_voices, torch_threads
from voicestream.server.formant import FormantSynthesizer
from voicestream.server.synth import SegmentStats, SynthesisOptions


@pytest.fixture(scope="module")
def batched_voice():
    synth = FormantSynthesizer(batch=BatchConfig(max_batch=8))
    yield synth
    synth.close()


async def test_concurrent_sessions_stream_through_one_batch(batched_voice):
    dec = batched_voice.decoder
    assert isinstance(dec, BatchedDecoder)
    before = dec.ticks
    async with running_server([batched_voice]) as (server, url):
        crowd = await asyncio.gather(*[speak(url, TEXT, words=True, sample_rate=16000, seed=s) for s in range(5)])
    rows = dec.rows_run - before
    for rx in crowd:
        assert rx.close_code == 1000
        check_stream(rx, rate=16000)
        audio = rx.audio()
        assert np.sqrt(np.mean(audio**2)) > 0.03
        done = rx.of("done")[0]["stats"]
        assert done["tokens"] > 100 and done["accepted_per_target_forward"] > 1.0
    # the sessions really were decoded together: more session-rows than ticks
    assert dec.ticks > before and rows > dec.ticks - before
    assert dec.active == []


def test_serve_batch_flag_builds_batched_voices():
    args = build_parser().parse_args(["serve", "--test-voice", "--batch", "4"])
    (voice,) = load_voices(args)
    try:
        assert isinstance(voice.decoder, BatchedDecoder) and voice.decoder.config.max_batch == 4
        assert torch_threads(args) >= 1
        stats = SegmentStats()
        pcm = list(voice.stream("Hello.", SynthesisOptions(), threading.Event(), stats))
        assert sum(p.size for p in pcm) == stats.audio_samples > 0
    finally:
        voice.close()
    plain = build_parser().parse_args(["serve", "--test-voice"])
    assert torch_threads(plain) == 1
    (voice,) = load_voices(plain)
    assert not isinstance(voice.decoder, BatchedDecoder)
    voice.close()
