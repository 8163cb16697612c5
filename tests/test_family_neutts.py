"""NeuTTS adapter: NeuCodec layout and codec (transformers' NeuCodecModel, random weights),
prompt format from tokenizer names, streaming, and a random Qwen2 checkpoint end to end."""
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers.models.neucodec", reason="NeuCodecModel needs transformers >= 5")

from voicestream.adapters.codecs import NeuCodecCodec
from voicestream.adapters.codecs.neucodec import NEUTTS_WINDOW
from voicestream.adapters.families import load_family_synthesizer
from voicestream.adapters.families.neutts import (
    NEUTTS_MARKERS,
    NeuTTSAdapter,
    NeuTTSVoice,
)
from voicestream.adapters.families.random_checkpoints import (
    byte_tokenizer,
    random_neutts_checkpoint,
)

from voicestream.codec import OverlapConfig, OverlapStreamingDecoder


def fake_phonemes(text: str) -> str:
    """Stand-in for espeak: deterministic, visibly transformed."""
    return "/" + text.lower() + "/"


@pytest.fixture(scope="module")
def codec():
    return NeuCodecCodec.random(seed=2)


@pytest.fixture(scope="module")
def neutts_dir(tmp_path_factory):
    return random_neutts_checkpoint(tmp_path_factory.mktemp("neutts"))


def test_codec_geometry_and_decode_length(codec):
    spec = codec.spec
    assert (spec.sample_rate, spec.samples_per_frame, spec.tokens_per_frame, spec.codebook_sizes) == (
        24000, 480, 1, (65536,),
    )
    codes = np.random.default_rng(0).integers(0, 65536, size=(7, 1))
    audio = codec.decode(codes)
    assert audio.dtype == np.float32 and audio.shape == (7 * 480,) and np.isfinite(audio).all()
    with pytest.raises(NotImplementedError, match="torchaudio"):
        codec.encode(np.zeros(1600, np.float32))


def test_codec_saves_and_loads_through_transformers(codec, tmp_path):
    codec.save(tmp_path)
    loaded = NeuCodecCodec.load(tmp_path)
    codes = np.arange(5).reshape(5, 1) * 999
    np.testing.assert_allclose(loaded.decode(codes), codec.decode(codes), atol=1e-6)


def test_streaming_equals_whole_with_a_full_window_and_releases_audio_early(codec):
    codes = np.random.default_rng(1).integers(0, 65536, size=(40, 1))
    whole = codec.decode(codes)
    tokens = codec.spec.codes_to_tokens(codes)
    full = OverlapStreamingDecoder(codec.spec, codec.decode, OverlapConfig(context_frames=40, lookahead_frames=40))
    out = np.concatenate([full.push(tokens[i : i + 6]) for i in range(0, 40, 6)] + [full.flush()])
    np.testing.assert_allclose(out, whole, atol=1e-5)
    # NeuTTS' window: 5 frames of look-ahead, so audio starts before the utterance ends
    ref = codec.streaming_decoder()
    assert ref.config == NEUTTS_WINDOW
    first = [ref.push(tokens[i : i + 1]).size for i in range(7)]
    # frame 0 is final once frame 5 arrives; its last 480 samples wait to be blended with
    # the next window's, so the first audio leaves with frame 6
    assert first == [0, 0, 0, 0, 0, 0, 480]
    rest = np.concatenate([ref.push(tokens[7:]), ref.flush()])
    assert sum(first) + rest.size == whole.size


def test_prompt_format_and_speech_ids_by_name(neutts_dir):
    from voicestream.adapters.families.text import load_tokenizer

    tok = load_tokenizer(neutts_dir)
    voice = NeuTTSVoice((3, 65535), "Ref text.")
    adapter = NeuTTSAdapter(tok, NeuCodecCodec.random(), voice=voice, phonemize=fake_phonemes)
    ids = {m: tok.convert_tokens_to_ids(m) for m in NEUTTS_MARKERS}
    base = tok.convert_tokens_to_ids("<|speech_0|>")
    prompt = adapter.build_prompt("Hello")
    expected = [
        *b"user: Convert the text to speech:", ids["<|TEXT_PROMPT_START|>"], *b"/ref text./ /hello/",
        ids["<|TEXT_PROMPT_END|>"], *b"\nassistant:", ids["<|SPEECH_GENERATION_START|>"], base + 3, base + 65535,
    ]
    assert prompt == expected
    assert adapter.layout.id_ranges == ((base, base + 65536),)
    assert adapter.stop_ids[0] == ids["<|SPEECH_GENERATION_END|>"]


def test_non_contiguous_speech_tokens_are_refused():
    names = {m: 300 + k for k, m in enumerate(NEUTTS_MARKERS)}
    names.update({f"<|speech_{i}|>": 400 + i for i in range(65536)})
    names["<|speech_4096|>"] = 100_000
    with pytest.raises(ValueError, match="contiguous"):
        NeuTTSAdapter(byte_tokenizer(names), NeuCodecCodec.random(), phonemize=fake_phonemes)


def test_voice_from_files(tmp_path: Path):
    torch.save(torch.tensor([[[5, 6, 7]]]), tmp_path / "dave.pt")
    (tmp_path / "dave.txt").write_text("So I'm live on radio.\n")
    voice = NeuTTSVoice.from_files(tmp_path / "dave")
    assert voice == NeuTTSVoice((5, 6, 7), "So I'm live on radio.", "dave")
    with pytest.raises(ValueError):
        NeuTTSVoice((70000,), "x")


def test_end_to_end_from_a_saved_qwen2_checkpoint(neutts_dir, codec):
    voice = NeuTTSVoice(tuple(range(0, 65536, 6553)), "Reference.")
    synth = load_family_synthesizer(
        "neutts", neutts_dir, draft="self:1", codec=codec, voice=voice, phonemize=fake_phonemes
    )
    assert synth.target.config.model_type == "qwen2" and synth.draft.config.num_hidden_layers == 1
    frames = 12
    result = synth.synthesize("Hello there.", synth.config_for("x").with_(max_new_tokens=frames))
    synth.close()
    assert result.sample_rate == 24000 and result.audio.shape == (frames * 480,)
    assert result.stats.frames == frames and result.stats.finish_reason == "length"
    assert result.stats.prompt_tokens > len(voice.codes)


def test_espeak_front_end_matches_neutts_settings():
    pytest.importorskip("phonemizer")
    from voicestream.adapters.families.neutts import EspeakPhonemizer

    phonemize = EspeakPhonemizer()
    try:
        phones = phonemize("Hello   there, Dave.")
    except RuntimeError as exc:  # phonemizer raises when the espeak-ng library is missing
        pytest.skip(f"espeak-ng not installed: {exc}")
    # stress marks and punctuation kept, whitespace collapsed (NeuTTS' EspeakBackend options)
    assert "ˈ" in phones and "," in phones and phones.endswith(".") and "  " not in phones
