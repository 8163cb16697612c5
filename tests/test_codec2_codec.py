"""Codec2 token codec: layout, bit-exactness vs pycodec2, token ranges, resampler."""

from __future__ import annotations

import numpy as np
import pytest

pycodec2 = pytest.importorskip("pycodec2")

from codec_audio import load_speech, synthetic_speech

from voicestream.codec import codec2 as c2mod
from voicestream.codec._codec2_rng import INITIAL_STATE, rng
from voicestream.codec.base import CodecSpec, TokenLayoutError
from voicestream.codec.codec2 import Codec2Codec, load_layout
from voicestream.codec.resample import resample

SPF = 160


@pytest.fixture(scope="module")
def codec() -> Codec2Codec:
    return Codec2Codec()


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    return load_speech()


def reference_frames(audio: np.ndarray) -> list[bytes]:
    """pycodec2's own encoder, frame by frame, with the same int16 conversion."""
    pcm = c2mod.float_to_pcm16(audio)
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % SPF, dtype=np.int16)])
    enc = pycodec2.Codec2(3200)
    return [enc.encode(np.ascontiguousarray(pcm[i : i + SPF])) for i in range(0, len(pcm), SPF)]


def reference_decode(frames: list[bytes]) -> np.ndarray:
    dec = pycodec2.Codec2(3200)
    with rng.using([INITIAL_STATE]):
        return np.concatenate([dec.decode(f) for f in frames])


# ------------------------------------------------------------------ layout
def test_spec_layout(codec: Codec2Codec) -> None:
    spec = codec.spec
    assert spec.sample_rate == 8000 and spec.samples_per_frame == SPF
    assert spec.frame_rate_hz == 50
    assert spec.codebook_sizes == (128, 128, 1024, 1024, 1024, 1024, 1024)
    assert spec.tokens_per_frame == 7 and spec.tokens_per_second == 350
    assert spec.vocab_size == 5376
    assert spec.codebook_offsets == (0, 128, 256, 1280, 2304, 3328, 4352)
    assert spec.codebook_names[:2] == ("voicing_energy", "pitch")


def test_layout_covers_all_64_bits_once() -> None:
    layout = load_layout()
    assert sum(f.bits for f in layout.fields) == 64
    assert sum(int(np.log2(s)) for s in layout.codebook_sizes) == 64
    masks = [((1 << f.bits) - 1) << f.shift for f in layout.fields]
    assert sum(masks) == (1 << 64) - 1
    assert all(a & b == 0 for i, a in enumerate(masks) for b in masks[i + 1 :])


def test_frame_code_mapping_is_a_bijection_on_random_bits() -> None:
    layout = load_layout()
    frames = np.random.default_rng(0).integers(0, 256, size=(5000, 8), dtype=np.uint8)
    codes = layout.frames_to_codes(frames)
    assert np.array_equal(layout.codes_to_frames(codes), frames)
    assert codes.min() >= 0 and np.all(codes < np.asarray(layout.codebook_sizes))
    # every code value is reachable: distinct frames -> distinct code rows
    assert len({tuple(r) for r in codes}) == len({bytes(f) for f in frames})


# ------------------------------------------------------- bit exactness
def test_encode_bits_match_pycodec2(codec: Codec2Codec, speech: list[np.ndarray]) -> None:
    for clip in speech:
        ours = codec.encode_frames(clip)
        ref = reference_frames(clip)
        assert [bytes(f) for f in ours] == ref


def test_tokens_round_trip_bit_exact(codec: Codec2Codec, speech: list[np.ndarray]) -> None:
    for clip in speech:
        tokens = codec.encode_tokens(clip)
        frames = codec.layout.codes_to_frames(codec.tokens_to_codes(tokens))
        assert [bytes(f) for f in frames] == reference_frames(clip)


@pytest.mark.skipif(not c2mod.deterministic, reason="libcodec2 noise RNG could not be isolated")
def test_decode_matches_pycodec2_reference_exactly(codec: Codec2Codec, speech: list[np.ndarray]) -> None:
    clip = speech[0]
    ours = codec.decode_tokens(codec.encode_tokens(clip))
    ref = reference_decode(reference_frames(clip))
    assert ours.dtype == np.float32
    assert np.array_equal(c2mod.float_to_pcm16(ours), ref)


@pytest.mark.skipif(not c2mod.deterministic, reason="libcodec2 noise RNG could not be isolated")
def test_decode_is_reproducible_regardless_of_other_decoders(codec: Codec2Codec, speech: list[np.ndarray]) -> None:
    tokens = codec.encode_tokens(speech[0])
    first = codec.decode_tokens(tokens)
    # advance libcodec2's global noise generator through unrelated decodes
    other = pycodec2.Codec2(3200)
    for f in reference_frames(speech[-1]):
        other.decode(f)
    assert np.array_equal(codec.decode_tokens(tokens), first)


def test_lengths(codec: Codec2Codec) -> None:
    x = synthetic_speech(seconds=0.5)[:3999]  # not a whole number of frames
    codes = codec.encode(x)
    assert codes.shape == (25, 7)
    assert codec.decode(codes).shape == (25 * SPF,)
    assert codec.encode(np.zeros(0, dtype=np.float32)).shape == (0, 7)


def test_decoded_energy_follows_input(codec: Codec2Codec, speech: list[np.ndarray]) -> None:
    """A broken field mapping decodes to speech-shaped noise; the frame energy
    contour of a correct round trip tracks the input."""
    clip = speech[0]
    y = codec.decode_tokens(codec.encode_tokens(clip))[: len(clip)]
    n = len(clip) // SPF
    e_in = 10 * np.log10(np.mean(clip[: n * SPF].reshape(n, SPF) ** 2, axis=1) + 1e-8)
    e_out = 10 * np.log10(np.mean(y[: n * SPF].reshape(n, SPF) ** 2, axis=1) + 1e-8)
    best = max(np.corrcoef(e_in[: n - lag], e_out[lag:])[0, 1] for lag in range(4))
    assert best > 0.9


# ------------------------------------------------------------ token ids
def test_token_ids_stay_in_their_codebook(codec: Codec2Codec, speech: list[np.ndarray]) -> None:
    tokens = codec.encode_tokens(speech[0])
    spec = codec.spec
    assert tokens.dtype == np.int64 and len(tokens) % 7 == 0
    assert tokens.min() >= 0 and tokens.max() < spec.vocab_size
    for pos in range(7):
        lo, hi = spec.slot_token_range(pos)
        col = tokens[pos::7]
        assert np.all((col >= lo) & (col < hi))
    for t in tokens[:50]:
        cb, code = spec.split_token(int(t))
        assert spec.token_id(cb, code) == t


def test_codes_are_ordinal_pitch_and_energy(codec: Codec2Codec) -> None:
    """Gray fields are mapped to natural binary: a smooth pitch glide or loudness
    ramp gives smoothly rising codes (raw Gray values would jump around)."""
    sr, seconds = 8000, 2.0
    t = np.arange(int(sr * seconds)) / sr

    def harmonics(f0: np.ndarray, amp: np.ndarray) -> np.ndarray:
        phase = 2 * np.pi * np.cumsum(f0) / sr
        return (amp * sum(np.sin(k * phase) / k for k in range(1, 12))).astype(np.float32)

    glide = codec.encode(harmonics(90 * (3.0 ** (t / seconds)), np.full_like(t, 0.2)))[5:-5, 1]
    ramp = codec.encode(harmonics(np.full_like(t, 150.0), 0.005 * (60.0 ** (t / seconds))))[5:-5, 0] % 32
    steps = np.diff(glide)
    assert np.all(steps >= 0) and np.all(steps <= 2)  # one quantiser level at a time
    assert glide[-1] - glide[0] >= 40
    thirds = [np.median(p) for p in np.array_split(ramp, 3)]
    assert thirds[0] < thirds[1] < thirds[2]
    assert np.corrcoef(np.arange(len(ramp)), ramp)[0, 1] > 0.8


def test_bad_token_streams_are_rejected(codec: Codec2Codec) -> None:
    tokens = codec.encode_tokens(synthetic_speech(seconds=0.2))
    with pytest.raises(TokenLayoutError):
        codec.tokens_to_codes(tokens[:-1])  # partial frame
    swapped = tokens.copy()
    swapped[0], swapped[1] = swapped[1], swapped[0]  # pitch id in the voicing slot
    with pytest.raises(TokenLayoutError, match="slot 0 is not in codebook 0"):
        codec.tokens_to_codes(swapped)
    with pytest.raises(TokenLayoutError):
        codec.spec.split_token(codec.spec.vocab_size)


def test_hierarchical_spec_offsets() -> None:
    """SNAC-like layout: 3 codebooks, 1 + 2 + 4 slots per coarse frame."""
    spec = CodecSpec("snac-like", 24000, 2048, (4096, 4096, 4096), slot_codebooks=(0, 1, 2, 2, 1, 2, 2))
    assert spec.tokens_per_frame == 7 and spec.vocab_size == 3 * 4096
    codes = np.array([[1, 2, 3, 4, 5, 6, 7]])
    tokens = spec.codes_to_tokens(codes)
    assert tokens.tolist() == [1, 4098, 8195, 8196, 4101, 8198, 8199]
    assert np.array_equal(spec.tokens_to_codes(tokens), codes)
    assert spec.slot_token_range(3) == (8192, 12288) and spec.slot_token_range(7) == (0, 4096)
    with pytest.raises(ValueError):
        CodecSpec("bad", 8000, 160, (4, 4), slot_codebooks=(0, 0))


# ------------------------------------------------------------- resampler
@pytest.mark.parametrize(
    ("sr_in", "sr_out", "freq"),
    [(22050, 8000, 440.0), (22050, 8000, 3000.0), (16000, 8000, 1000.0), (8000, 16000, 1000.0), (8000, 22050, 2500.0)],
)
def test_resample_sine_accuracy(sr_in: int, sr_out: int, freq: float) -> None:
    x = np.sin(2 * np.pi * freq * np.arange(sr_in) / sr_in)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32 and len(y) == sr_out
    ref = np.sin(2 * np.pi * freq * np.arange(len(y)) / sr_out)
    interior = slice(len(y) // 10, -len(y) // 10)
    assert np.max(np.abs(y[interior] - ref[interior])) < 1e-3


def test_resample_rejects_aliases() -> None:
    sr = 22050
    x = np.sin(2 * np.pi * 5000 * np.arange(sr) / sr)  # above the 4 kHz target Nyquist
    y = resample(x, sr, 8000)
    assert np.sqrt(np.mean(y[500:-500] ** 2)) < 1e-3


def test_resample_identity_and_lengths() -> None:
    x = np.random.default_rng(0).standard_normal(1001).astype(np.float32)
    assert np.array_equal(resample(x, 8000, 8000), x)
    assert len(resample(x, 22050, 8000)) == int(np.ceil(1001 * 8000 / 22050))
    with pytest.raises(ValueError):
        resample(x, 0, 8000)


def test_codec2_noise_rng_is_isolated() -> None:
    """Exact streaming/reference comparisons above skip without this; fail loudly
    here so a pycodec2 build that hides the RNG state is noticed."""
    assert c2mod.deterministic, "could not locate libcodec2's codec2_rand state; decoding is not reproducible"
    holder = [123]
    with rng.using(holder):
        pass
    assert holder == [123]
