"""Orpheus adapter: exact SNAC token layout, prompt format, streaming window, and end-to-end
synthesis from a random Llama with Orpheus' vocabulary saved and loaded from disk."""
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("snac")

from voicestream.adapters.codecs import SnacCodec
from voicestream.adapters.codecs.snac import SNAC_24KHZ_CONFIG
from voicestream.adapters.families import AudioLayout, load_family_synthesizer
from voicestream.adapters.families.orpheus import (
    ORPHEUS_VOCAB_SIZE,
    ORPHEUS_WINDOWS,
    OrpheusAdapter,
    orpheus_layout,
)
from voicestream.adapters.families.random_checkpoints import (
    byte_tokenizer,
    random_orpheus_checkpoint,
)

from voicestream.codec import OverlapStreamingDecoder

# same kernel sizes, rates, strides (so the same receptive field) as the 24 kHz model, narrower
SLIM_SNAC = dict(SNAC_24KHZ_CONFIG, decoder_dim=64, encoder_dim=16)


@pytest.fixture(scope="module")
def slim_snac():
    return SnacCodec.random(SLIM_SNAC, noise=False, seed=3)


def known_snac_codes(frames: int):
    """Distinct codes per codebook, as SNAC returns them: c0 (1,F), c1 (1,2F), c2 (1,4F)."""
    c0 = torch.arange(frames).reshape(1, -1) * 7 + 11
    c1 = torch.arange(2 * frames).reshape(1, -1) * 13 + 1000
    c2 = torch.arange(4 * frames).reshape(1, -1) * 17 + 2000
    return [c0, c1, c2]


def expected_orpheus_ids(c0, c1, c2) -> list[int]:
    """Orpheus' layout written out: per frame c0, c1a, c2a, c2b, c1b, c2c, c2d, each at
    128266 + position * 4096 + code (Orpheus' tokens_decoder / data preparation)."""
    c0, c1, c2 = (c.reshape(-1).tolist() for c in (c0, c1, c2))
    out = []
    for t in range(len(c0)):
        frame = [c0[t], c1[2 * t], c2[4 * t], c2[4 * t + 1], c1[2 * t + 1], c2[4 * t + 2], c2[4 * t + 3]]
        out += [128266 + p * 4096 + code for p, code in enumerate(frame)]
    return out


def test_known_codes_map_to_orpheus_ids_and_back(slim_snac):
    snac_codes = known_snac_codes(3)
    codes = slim_snac.snac_to_codes(snac_codes)
    ids = orpheus_layout().codes_to_ids(codes)
    assert ids.tolist() == expected_orpheus_ids(*snac_codes)
    back = slim_snac.codes_to_snac(orpheus_layout().ids_to_codes(ids))
    for got, want in zip(back, snac_codes):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    "wrong_slots",
    [
        (0, 1, 2, 3, 4, 5, 6),  # SNAC's natural order instead of Orpheus' interleave
        (0, 2, 3, 4, 1, 5, 6),  # c1a <-> c1b
        (0, 1, 3, 4, 2, 6, 5),  # c2c <-> c2d
    ],
)
def test_a_swapped_layout_fails_the_layout_check(slim_snac, wrong_slots):
    snac_codes = known_snac_codes(2)
    wrong = AudioLayout(orpheus_layout().slot_offsets, (4096,) * 7, wrong_slots)
    assert wrong.codes_to_ids(slim_snac.snac_to_codes(snac_codes)).tolist() != expected_orpheus_ids(*snac_codes)


def test_lm_ids_decode_to_the_audio_of_the_snac_codes(slim_snac):
    snac_codes = known_snac_codes(3)
    ids = expected_orpheus_ids(*snac_codes)
    audio = slim_snac.decode(orpheus_layout().ids_to_codes(ids))
    with torch.inference_mode():
        direct = slim_snac.model.decode(snac_codes).reshape(-1).numpy()
    assert audio.shape == (3 * 2048,)
    np.testing.assert_array_equal(audio, direct)


def test_snac_codec_spec_and_encode_round_trip_shapes(slim_snac):
    spec = slim_snac.spec
    assert (spec.sample_rate, spec.samples_per_frame, spec.tokens_per_frame) == (24000, 2048, 7)
    assert spec.slot_codebooks == (0, 1, 1, 2, 2, 2, 2) and spec.codebook_sizes == (4096,) * 3
    audio = np.random.default_rng(0).standard_normal(3 * 2048 - 100).astype(np.float32) * 0.1
    codes = slim_snac.encode(audio)
    assert codes.shape == (3, 7) and codes.min() >= 0 and codes.max() < 4096
    assert slim_snac.decode(codes).shape == (3 * 2048,)


def test_prompt_format():
    tok = byte_tokenizer(bos=("<|begin_of_text|>", 128000))
    codec = SnacCodec.random(SLIM_SNAC)
    prompt = OrpheusAdapter(tok, codec, voice="tara").build_prompt("Hi!")
    assert prompt == [128259, 128000, *b"tara: Hi!", 128009, 128260, 128261, 128257]
    assert OrpheusAdapter(tok, codec, voice=None).build_prompt("Hi!")[2:5] == list(b"Hi!")
    assert OrpheusAdapter(tok, codec, window="exact").window == ORPHEUS_WINDOWS["exact"]
    custom = OrpheusAdapter(tok, codec, window={"context_frames": 4, "lookahead_frames": 1}).window
    assert (custom.context_frames, custom.lookahead_frames) == (4, 1)
    with pytest.raises(ValueError, match="window must be one of"):
        OrpheusAdapter(tok, codec, window="fast")


def _stream(decoder, tokens, sizes):
    out, i, k = [], 0, 0
    while i < len(tokens):
        n = sizes[k % len(sizes)]
        out.append(decoder.push(tokens[i : i + n]))
        i, k = i + n, k + 1
    return np.concatenate(out + [decoder.flush()])


def test_exact_window_streams_the_whole_decode_and_reference_window_stays_close(slim_snac):
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 4096, size=(10, 7))
    whole = slim_snac.decode(codes)
    tokens = slim_snac.spec.codes_to_tokens(codes)
    peak = np.abs(whole).max()
    errors = {}
    for name, window in ORPHEUS_WINDOWS.items():
        out = _stream(OverlapStreamingDecoder(slim_snac.spec, slim_snac.decode, window), tokens, [3, 7, 11, 1, 20])
        assert out.shape == whole.shape
        errors[name] = np.abs(out - whole).max() / peak
    assert errors["exact"] < 1e-5
    assert errors["balanced"] < errors["reference"] < 0.05


def test_lookahead_sets_how_much_audio_a_frame_releases(slim_snac):
    dec = slim_snac.streaming_decoder(ORPHEUS_WINDOWS["balanced"])  # 2 frames of lookahead
    tokens = slim_snac.spec.codes_to_tokens(np.random.default_rng(1).integers(0, 4096, size=(4, 7)))
    got = [dec.push(tokens[7 * i : 7 * i + 7]).size for i in range(4)]
    assert got == [0, 0, 2048, 2048]
    assert dec.flush().size == 2 * 2048


@pytest.fixture(scope="module")
def orpheus_dir(tmp_path_factory):
    return random_orpheus_checkpoint(tmp_path_factory.mktemp("orpheus"), num_layers=2, hidden_size=32)


@pytest.fixture(scope="module")
def synth(orpheus_dir, slim_snac):
    s = load_family_synthesizer("orpheus", orpheus_dir, codec=slim_snac)
    yield s
    s.close()


def test_checkpoint_loads_back_with_orpheus_vocabulary(synth):
    assert synth.vocab_size == ORPHEUS_VOCAB_SIZE == synth.target.config.vocab_size
    assert synth.sample_rate == 24000 and synth.name == "orpheus-tara" and synth.supports_speed is False


def test_end_to_end_with_the_real_24khz_snac(orpheus_dir):
    codec = SnacCodec.random(noise=True)  # the released 24 kHz configuration, random weights
    s = load_family_synthesizer("orpheus", orpheus_dir, codec=codec)
    frames = 3
    result = s.synthesize("Hello.", s.config_for("Hello.").with_(max_new_tokens=7 * frames))
    s.close()
    assert result.sample_rate == 24000
    assert result.audio.dtype == np.float32 and result.audio.shape == (frames * 2048,)
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() > 0
    st = result.stats
    assert (st.frames, st.codec_tokens, st.finish_reason) == (frames, 7 * frames, "length")
    assert st.ttfa_s is not None and st.audio_s == pytest.approx(frames * 2048 / 24000)


def test_server_protocol_stream_fills_segment_stats(synth):
    absorbed = {}
    stats = SimpleNamespace(text="", audio_samples=0, finish_reason=None, absorb_generation=absorbed.update)
    options = SimpleNamespace(rule="greedy", gamma=3, temperature=0.0, seed=0, speed=1.0)
    chunks = list(synth.stream("Hi", options, threading.Event(), stats))
    assert sum(c.size for c in chunks) == stats.audio_samples > 0
    assert stats.text == "Hi" and absorbed["target_forwards"] > 0 and stats.finish_reason == "length"


def test_sampling_options_use_the_family_defaults(synth):
    cfg = synth.config_for("Hi", SimpleNamespace(rule="sampling", gamma=5, temperature=0.0, seed=7))
    assert (cfg.rule, cfg.gamma, cfg.seed) == ("sampling", 5, 7)
    assert (cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.repetition_penalty) == (0.6, 0.8, 1.3)
    assert synth.config_for("Hi", SimpleNamespace(rule="greedy", gamma=4, temperature=0.9, seed=0)).sampling.greedy
    assert set(cfg.stop_ids) == {128258, 128262, 128009}


def test_cancel_stops_within_a_step(synth):
    cancel = threading.Event()
    stats = SimpleNamespace(text="", audio_samples=0, finish_reason=None)
    it = synth.stream("A long sentence to speak.", None, cancel, stats)
    first = next(it)
    cancel.set()
    rest = list(it)
    assert first.size > 0 and sum(r.size for r in rest) <= 2048 * 3
    assert stats.finish_reason == "cancelled"
