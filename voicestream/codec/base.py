"""Codec-agnostic interface between audio codecs and the codec-token LMs.

A codec turns audio into *frames*; a frame is a fixed-length tuple of integer
codes ("slots").  Each slot belongs to one codebook.  For flat codecs
(Codec2 here, DAC, XCodec2) slot ``i`` is codebook ``i``.  For hierarchical
codecs (SNAC: 3 codebooks at 12/23/47 Hz) one coarse frame holds 1 + 2 + 4
slots, so several slots share a codebook; ``slot_codebooks`` expresses that.

The LM sees one flat token stream: frames one after another, slots in a fixed
order, and token id = ``codebook_offset[codebook] + code``.  The LM vocabulary
for audio is therefore the concatenation of all codebooks; ids at or above
``CodecSpec.vocab_size`` are free for the LM's own specials (BOS/EOS...).
Keeping codebooks disjoint lets the LM (and the speculative verifier) mask
logits to the one codebook legal at each position.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Codec", "CodecSpec", "StreamingDecoder", "TokenLayoutError"]


class TokenLayoutError(ValueError):
    """A flat token id is out of range or sits in a slot of the wrong codebook."""


@dataclass(frozen=True)
class CodecSpec:
    """Static description of a codec's audio framing and token layout.

    Why frozen: the spec is shared by the LM, the verifier and the decoder;
    it must not drift at runtime.
    """

    name: str
    sample_rate: int
    samples_per_frame: int
    codebook_sizes: tuple[int, ...]
    # Codebook of each slot in a frame, in flattening order.  Empty means
    # "one slot per codebook, in codebook order".
    slot_codebooks: tuple[int, ...] = ()
    codebook_names: tuple[str, ...] = ()
    # Per codebook, the bit widths of the ordinal fields its codes pack (most significant
    # first; e.g. two 5-bit scalar-quantiser indices -> (5, 5)), or empty when the codes
    # are not ordinal (learned VQ).  Lets decoding take a field-wise median.
    ordinal_fields: tuple[tuple[int, ...], ...] = ()
    _offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.samples_per_frame <= 0:
            raise ValueError("sample_rate and samples_per_frame must be positive")
        if not self.codebook_sizes or any(s <= 0 for s in self.codebook_sizes):
            raise ValueError("codebook_sizes must be non-empty and positive")
        sizes = tuple(int(s) for s in self.codebook_sizes)
        object.__setattr__(self, "codebook_sizes", sizes)
        slots = tuple(self.slot_codebooks) or tuple(range(len(sizes)))
        if any(not 0 <= c < len(sizes) for c in slots):
            raise ValueError("slot_codebooks refers to an unknown codebook")
        if set(slots) != set(range(len(sizes))):
            raise ValueError("every codebook must appear in at least one slot")
        object.__setattr__(self, "slot_codebooks", slots)
        if self.codebook_names and len(self.codebook_names) != len(sizes):
            raise ValueError("codebook_names must match codebook_sizes")
        if self.ordinal_fields:
            fields = tuple(tuple(int(b) for b in f) for f in self.ordinal_fields)
            if len(fields) != len(sizes) or any(1 << sum(f) != n for f, n in zip(fields, sizes)):
                raise ValueError("ordinal_fields must give each codebook's bits (2**sum == its size)")
            object.__setattr__(self, "ordinal_fields", fields)
        offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        object.__setattr__(self, "_offsets", offsets)

    # ----- derived sizes -------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return len(self.codebook_sizes)

    @property
    def tokens_per_frame(self) -> int:
        return len(self.slot_codebooks)

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate / self.samples_per_frame

    @property
    def tokens_per_second(self) -> float:
        return self.frame_rate_hz * self.tokens_per_frame

    @property
    def vocab_size(self) -> int:
        """Number of flat audio token ids: ``[0, vocab_size)``."""
        return int(sum(self.codebook_sizes))

    @property
    def codebook_offsets(self) -> tuple[int, ...]:
        return self._offsets

    # ----- single token mapping ------------------------------------------
    def token_id(self, codebook: int, code: int) -> int:
        """Flat id of ``code`` in ``codebook``."""
        if not 0 <= codebook < self.num_codebooks:
            raise TokenLayoutError(f"codebook {codebook} out of range")
        if not 0 <= code < self.codebook_sizes[codebook]:
            raise TokenLayoutError(f"code {code} out of range for codebook {codebook}")
        return self._offsets[codebook] + code

    def split_token(self, token_id: int) -> tuple[int, int]:
        """Inverse of :meth:`token_id`: ``(codebook, code)``."""
        if not 0 <= token_id < self.vocab_size:
            raise TokenLayoutError(f"token id {token_id} outside audio vocab [0, {self.vocab_size})")
        cb = int(np.searchsorted(np.asarray(self._offsets), token_id, side="right") - 1)
        return cb, token_id - self._offsets[cb]

    def slot_token_range(self, position: int) -> tuple[int, int]:
        """Half-open id range legal at stream ``position`` (for logit masking)."""
        cb = self.slot_codebooks[position % self.tokens_per_frame]
        return self._offsets[cb], self._offsets[cb] + self.codebook_sizes[cb]

    # ----- array mapping -------------------------------------------------
    def codes_to_tokens(self, codes: np.ndarray) -> np.ndarray:
        """``(frames, slots)`` codes -> flat int64 token ids, frame-major."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.tokens_per_frame:
            raise TokenLayoutError(f"codes must have shape (frames, {self.tokens_per_frame}), got {codes.shape}")
        slot_cb = np.asarray(self.slot_codebooks)
        sizes = np.asarray(self.codebook_sizes)[slot_cb]
        if codes.size and (codes.min() < 0 or np.any(codes >= sizes[None, :])):
            raise TokenLayoutError("code out of range for its codebook")
        offs = np.asarray(self._offsets)[slot_cb]
        return (codes.astype(np.int64) + offs[None, :]).reshape(-1)

    def tokens_to_codes(self, tokens: np.ndarray | list[int]) -> np.ndarray:
        """Flat ids (a whole number of frames, starting at slot 0) -> ``(frames, slots)`` codes."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        k = self.tokens_per_frame
        if tokens.size % k:
            raise TokenLayoutError(f"{tokens.size} tokens is not a whole number of {k}-token frames")
        codes = tokens.reshape(-1, k) - np.asarray(self._offsets)[np.asarray(self.slot_codebooks)][None, :]
        self._check_codes(codes, tokens)
        return codes

    def validate_tokens(self, tokens: np.ndarray, start_slot: int) -> None:
        """Raise if any id is not in the codebook of its slot (stream offset ``start_slot``)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size == 0:
            return
        slots = (np.arange(tokens.size) + start_slot) % self.tokens_per_frame
        cb = np.asarray(self.slot_codebooks)[slots]
        lo = np.asarray(self._offsets)[cb]
        hi = lo + np.asarray(self.codebook_sizes)[cb]
        bad = np.nonzero((tokens < lo) | (tokens >= hi))[0]
        if bad.size:
            i = int(bad[0])
            raise TokenLayoutError(
                f"token {int(tokens[i])} at slot {int(slots[i])} is not in codebook {int(cb[i])} "
                f"(ids [{int(lo[i])}, {int(hi[i])}))"
            )

    def _check_codes(self, codes: np.ndarray, tokens: np.ndarray) -> None:
        sizes = np.asarray(self.codebook_sizes)[np.asarray(self.slot_codebooks)]
        if codes.size and (codes.min() < 0 or np.any(codes >= sizes[None, :])):
            self.validate_tokens(tokens, 0)  # raises with a precise message

    def num_samples(self, frames: int) -> int:
        return frames * self.samples_per_frame

    def num_frames(self, samples: int) -> int:
        """Frames needed to cover ``samples`` (the last one zero-padded)."""
        return -(-samples // self.samples_per_frame)


class StreamingDecoder(ABC):
    """Turns a stream of flat token ids into PCM as soon as frames complete.

    Subclasses implement frame decoding; this base class owns buffering of
    partial frames across :meth:`push` calls and token validation, so every
    codec gets identical streaming semantics.
    """

    def __init__(self, spec: CodecSpec) -> None:
        self.spec = spec
        self._pending: list[int] = []
        self.frames_decoded = 0

    @property
    def pending_tokens(self) -> int:
        """Tokens of an incomplete frame currently buffered."""
        return len(self._pending)

    def push(self, token_ids: np.ndarray | list[int]) -> np.ndarray:
        """Add tokens; return PCM for every frame they complete (maybe empty)."""
        toks = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        self.spec.validate_tokens(toks, start_slot=len(self._pending))
        self._pending.extend(int(t) for t in toks)
        k = self.spec.tokens_per_frame
        n_frames = len(self._pending) // k
        if n_frames == 0:
            return np.zeros(0, dtype=np.float32)
        whole = self._pending[: n_frames * k]
        self._pending = self._pending[n_frames * k :]
        codes = self.spec.tokens_to_codes(whole)
        self.frames_decoded += n_frames
        return np.asarray(self._decode_frames(codes), dtype=np.float32)

    def flush(self) -> np.ndarray:
        """End of utterance: return held-back audio, drop an incomplete trailing
        frame, then :meth:`reset` so the decoder is ready for the next one."""
        out = np.asarray(self._flush(), dtype=np.float32)
        self.reset()
        return out

    def reset(self) -> None:
        """Forget all state so the next push starts a new utterance."""
        self._pending = []
        self.frames_decoded = 0
        self._reset()

    @abstractmethod
    def _decode_frames(self, codes: np.ndarray) -> np.ndarray:
        """Decode whole frames ``(n, slots)``; may hold back audio for later."""

    def _flush(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)

    @abstractmethod
    def _reset(self) -> None:
        """Reset codec-specific decoder state."""


class Codec(ABC):
    """An audio codec with a flat-token view for language models."""

    spec: CodecSpec

    @abstractmethod
    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Mono float32 audio at ``spec.sample_rate`` -> int64 codes ``(frames, slots)``."""

    @abstractmethod
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes ``(frames, slots)`` -> mono float32 audio, ``frames * samples_per_frame`` long."""

    @abstractmethod
    def streaming_decoder(self) -> StreamingDecoder:
        """A fresh decoder whose chunked output equals :meth:`decode` of the whole."""

    def codes_to_tokens(self, codes: np.ndarray) -> np.ndarray:
        return self.spec.codes_to_tokens(codes)

    def tokens_to_codes(self, tokens: np.ndarray | list[int]) -> np.ndarray:
        return self.spec.tokens_to_codes(tokens)

    def encode_tokens(self, audio: np.ndarray) -> np.ndarray:
        """Audio -> flat LM token ids."""
        return self.codes_to_tokens(self.encode(audio))

    def decode_tokens(self, tokens: np.ndarray | list[int]) -> np.ndarray:
        """Flat LM token ids (whole frames) -> audio."""
        return self.decode(self.tokens_to_codes(tokens))
