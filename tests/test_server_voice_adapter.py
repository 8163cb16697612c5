"""The adapter for the trained voice (voicestream.voice.Voice), served over the websocket.

The voice package is developed on its own branch: without it, loading must fail with a
clear error; with it, a tiny random Voice must stream through the server exactly as it
streams on its own."""
import importlib.util
import threading

import numpy as np
import pytest
from server_util import running_server, speak

from voicestream.server.synth import (
    SegmentStats,
    SynthesisOptions,
    VoiceSynthesizer,
    VoiceUnavailableError,
    load_voice_synthesizer,
)

HAVE_VOICE = importlib.util.find_spec("voicestream.voice") is not None
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.skipif(HAVE_VOICE, reason="voicestream.voice is installed")
def test_missing_voice_package_gives_a_clear_error(tmp_path):
    with pytest.raises(VoiceUnavailableError, match="--test-voice"):
        load_voice_synthesizer(tmp_path)


@pytest.fixture(scope="module")
def tiny_voice():
    if not HAVE_VOICE:
        pytest.skip("voicestream.voice not in this tree yet")
    from voicestream.voice import Voice, VoiceVocab
    from voicestream.voice.presets import PRESETS, build_model

    vocab = VoiceVocab()
    voice = Voice(build_model(PRESETS["tiny"][0], vocab, seed=11), build_model(PRESETS["tiny"][0], vocab, seed=12))
    yield VoiceSynthesizer(voice, name="tiny")
    voice.close()


def test_adapter_streams_what_the_voice_streams(tiny_voice):
    from voicestream.voice import SynthesisStats

    text = "Hello, world."
    opts = SynthesisOptions(gamma=3, seed=2)
    stats = SegmentStats()
    via_adapter = list(tiny_voice.stream(text, opts, threading.Event(), stats))
    direct = list(tiny_voice.voice.stream(text, tiny_voice._spec_config(text, opts), stats=SynthesisStats()))
    assert len(via_adapter) == len(direct) and all(np.array_equal(a, b) for a, b in zip(via_adapter, direct))
    assert stats.tokens > 0 and stats.target_forwards > 0
    assert stats.audio_samples == sum(a.size for a in direct)
    assert tiny_voice.sample_rate == 8000 and not tiny_voice.supports_speed


async def test_tiny_voice_over_the_websocket(tiny_voice):
    async with running_server([tiny_voice]) as (_, url):
        rx = await speak(url, "Hi there. Bye now.", sample_rate=16000)
    assert rx.close_code == 1000
    done = rx.of("done")[0]["stats"]
    assert done["tokens"] > 0 and done["target_forwards"] > 0
    assert rx.seqs() == list(range(len(rx.frames)))


def test_serve_codec_pick_reaches_the_loaded_voice(tmp_path):
    if not HAVE_VOICE:
        pytest.skip("voicestream.voice not in this tree yet")
    pytest.importorskip("pycodec2")
    import argparse

    from voicestream.server.cli import add_arguments, load_voices
    from voicestream.voice import VoiceVocab
    from voicestream.voice.presets import PRESETS, build_model

    build_model(PRESETS["tiny"][0], VoiceVocab(), seed=11).save_pretrained(tmp_path / "t")
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    picked = {}
    for pick in ("model", "median"):
        args = ap.parse_args(["--voice", f"v={tmp_path / 't'}", "--codec-pick", pick])
        (synth,) = load_voices(args)
        voice = synth.voice
        state = voice.grammar.initial()
        for t in voice.vocab.prompt_for("hi.") + [voice.vocab.word_id, *voice.vocab.text_ids("hi.", normalize=False)]:
            state = voice.grammar.step(state, t)
        picked[pick] = voice.codec_pick, voice.grammar.pick(state)  # the unit's first frame is next
        synth.close()
    assert picked["model"] == ("model", None) and picked["median"][0] == "median"
    assert picked["median"][1].bits == (1, 1, 5)
    with pytest.raises(SystemExit):
        ap.parse_args(["--codec-pick", "mode"])
