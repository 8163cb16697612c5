"""Streaming decode: chunked output must equal whole-utterance decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from codec_audio import load_speech

from voicestream.codec.base import CodecSpec, TokenLayoutError
from voicestream.codec.streaming import OverlapConfig, OverlapStreamingDecoder, measure_receptive_field

CHUNKS = (1, 3, 7, 50)


def stream(decoder, tokens: np.ndarray, chunk: int) -> np.ndarray:
    parts = [decoder.push(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk)]
    return np.concatenate(parts + [decoder.flush()])


# ---------------------------------------------------------------- Codec2
@pytest.fixture(scope="module")
def codec2_case():
    pytest.importorskip("pycodec2")
    from voicestream.codec import codec2 as c2mod

    if not c2mod.deterministic:
        pytest.skip("libcodec2 noise RNG could not be isolated")
    codec = c2mod.Codec2Codec()
    tokens = codec.encode_tokens(load_speech()[0])
    return codec, tokens, codec.decode_tokens(tokens)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_codec2_chunked_equals_whole(codec2_case, chunk: int) -> None:
    codec, tokens, whole = codec2_case
    out = stream(codec.streaming_decoder(), tokens, chunk)
    assert out.dtype == np.float32
    assert np.array_equal(out, whole)


def test_codec2_irregular_chunks_and_reuse_after_reset(codec2_case) -> None:
    codec, tokens, whole = codec2_case
    dec = codec.streaming_decoder()
    sizes = np.random.default_rng(0).integers(0, 20, size=len(tokens))
    parts, i = [], 0
    for s in sizes:
        if i >= len(tokens):
            break
        parts.append(dec.push(tokens[i : i + s]))
        i += s
    assert np.array_equal(np.concatenate(parts + [dec.flush()]), whole)
    # flush resets: the same decoder gives the same audio for the next utterance
    assert np.array_equal(stream(dec, tokens, 7), whole)
    dec.push(tokens[:20])
    dec.reset()
    assert np.array_equal(stream(dec, tokens, 3), whole)


def test_codec2_partial_frames_are_buffered(codec2_case) -> None:
    codec, tokens, whole = codec2_case
    dec = codec.streaming_decoder()
    assert dec.push(tokens[:3]).size == 0 and dec.pending_tokens == 3
    assert dec.push(tokens[3:6]).size == 0 and dec.pending_tokens == 6
    first = dec.push(tokens[6:10])  # completes frame 0, starts frame 1
    assert first.size == 160 and dec.pending_tokens == 3
    assert np.array_equal(first, whole[:160])
    assert dec.push(np.zeros(0, dtype=np.int64)).size == 0
    assert dec.flush().size == 0 and dec.pending_tokens == 0  # incomplete frame dropped


def test_codec2_restarting_per_chunk_differs(codec2_case) -> None:
    """Why one live decoder is needed: decoding chunks independently changes the
    audio at every chunk start (Codec2 interpolates from the previous frame)."""
    codec, tokens, whole = codec2_case
    k = 7 * 10
    naive = np.concatenate([codec.decode_tokens(tokens[i : i + k]) for i in range(0, len(tokens) - k + 1, k)])
    assert np.max(np.abs(naive - whole[: len(naive)])) > 0.01


def test_codec2_rejects_misaligned_tokens(codec2_case) -> None:
    codec, tokens, _ = codec2_case
    dec = codec.streaming_decoder()
    dec.push(tokens[:2])
    with pytest.raises(TokenLayoutError, match="slot 2"):
        dec.push([0])  # a voicing/energy id where an LSP id belongs
    with pytest.raises(TokenLayoutError):
        dec.push([codec.spec.vocab_size + 5])


# ------------------------------------------------- toy convolutional codec
TOY = CodecSpec("toy-snac-like", 16000, 16, (32, 64), slot_codebooks=(0, 1, 1))


class ToyConvDecoder:
    """Fixed random embedding -> conv -> 2x conv-transpose upsampler (x16).

    Non-causal on both sides and non-linear, like neural codec decoders.
    """

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        ch = 8
        self.emb = [torch.randn(s, ch, generator=g, dtype=torch.float64) for s in TOY.codebook_sizes]
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv1d(ch, ch, 3, padding=1).double()
        self.up1 = torch.nn.ConvTranspose1d(ch, ch, 8, stride=4, padding=2).double()
        self.up2 = torch.nn.ConvTranspose1d(ch, 1, 8, stride=4, padding=2).double()

    @torch.no_grad()
    def __call__(self, codes: np.ndarray) -> np.ndarray:
        c = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        h = sum(self.emb[cb][c[:, slot]] for slot, cb in enumerate(TOY.slot_codebooks))
        h = torch.tanh(self.conv(h.T[None]))
        h = torch.tanh(self.up1(h))
        return self.up2(h)[0, 0].numpy()


@pytest.fixture(scope="module")
def toy_case():
    decode = ToyConvDecoder()
    codes = np.random.default_rng(1).integers(0, [32, 64, 64], size=(120, 3))
    return decode, TOY.codes_to_tokens(codes), decode(codes)


def test_receptive_field_probe(toy_case) -> None:
    decode, _, _ = toy_case
    left, right = measure_receptive_field(decode, TOY)
    assert 1 <= left <= 3 and 1 <= right <= 3  # conv k=3 plus two k=8/s=4 up-convs

    def identity(codes: np.ndarray) -> np.ndarray:
        return np.repeat(codes[:, 0].astype(np.float64), TOY.samples_per_frame)

    assert measure_receptive_field(identity, TOY) == (0, 0)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("crossfade", [0, 8, 16])
def test_overlap_decoder_chunked_matches_whole(toy_case, chunk: int, crossfade: int) -> None:
    decode, tokens, whole = toy_case
    left, right = measure_receptive_field(decode, TOY)
    dec = OverlapStreamingDecoder(TOY, decode, OverlapConfig(left, right, crossfade))
    out = stream(dec, tokens, chunk)
    assert out.shape == whole.shape
    assert np.max(np.abs(out - whole)) < 1e-5


def test_overlap_decoder_without_context_is_wrong(toy_case) -> None:
    """The bound above is meaningful: too little context gives audible errors."""
    decode, tokens, whole = toy_case
    dec = OverlapStreamingDecoder(TOY, decode, OverlapConfig(0, 0, 8))
    assert np.max(np.abs(stream(dec, tokens, 3) - whole)) > 1e-2


def test_overlap_decoder_holds_back_lookahead(toy_case) -> None:
    decode, tokens, whole = toy_case
    dec = OverlapStreamingDecoder(TOY, decode, OverlapConfig(2, 2, 8))
    spf, k = TOY.samples_per_frame, TOY.tokens_per_frame
    assert dec.push(tokens[: 2 * k]).size == 0  # both frames are lookahead
    first = dec.push(tokens[2 * k : 3 * k + 1])  # frame 0 now final, minus crossfade tail
    assert first.size == spf - 8 and dec.pending_tokens == 1
    assert np.max(np.abs(first - whole[: spf - 8])) < 1e-5  # frame 0 already final
    rest = dec.flush()
    assert first.size + rest.size == 3 * spf


def test_overlap_config_validation() -> None:
    with pytest.raises(ValueError):
        OverlapStreamingDecoder(TOY, lambda c: np.zeros(len(c) * 16), OverlapConfig(1, 0, 17))
    with pytest.raises(ValueError):
        OverlapConfig(-1)
    bad = OverlapStreamingDecoder(TOY, lambda c: np.zeros(5), OverlapConfig(0))
    with pytest.raises(ValueError, match="samples"):
        bad.push(TOY.codes_to_tokens(np.zeros((1, 3), dtype=np.int64)))
