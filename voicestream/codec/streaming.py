"""Streaming decode for stateless (convolutional) codec decoders.

Neural codecs such as SNAC/DAC decode a whole code sequence at once; each
output sample depends on a few frames to its left AND right (receptive
field).  Decoding each chunk on its own therefore changes samples near chunk
edges and clicks.  :class:`OverlapStreamingDecoder` re-decodes a window that
includes enough left context, holds back frames whose audio still depends on
frames not yet received, emits only the new part and crossfades across the
seam.  With context and lookahead covering the receptive field the stream
equals whole-utterance decode up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .base import CodecSpec, StreamingDecoder

__all__ = ["OverlapConfig", "OverlapStreamingDecoder", "measure_receptive_field"]

DecodeFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class OverlapConfig:
    """Window geometry, in frames of the codec spec."""

    context_frames: int  # left context re-decoded but not emitted (>= left receptive field)
    lookahead_frames: int = 0  # newest frames held back (>= right receptive field)
    crossfade_samples: int = 0  # raised-cosine blend at each seam (<= samples_per_frame)

    def __post_init__(self) -> None:
        if min(self.context_frames, self.lookahead_frames, self.crossfade_samples) < 0:
            raise ValueError("OverlapConfig values must be >= 0")


class OverlapStreamingDecoder(StreamingDecoder):
    """Chunked decode of a stateless ``decode_fn(codes (n, slots)) -> audio (n*spf,)``."""

    def __init__(self, spec: CodecSpec, decode_fn: DecodeFn, config: OverlapConfig) -> None:
        super().__init__(spec)
        if config.crossfade_samples > spec.samples_per_frame:
            raise ValueError("crossfade_samples must not exceed samples_per_frame")
        self.decode_fn = decode_fn
        self.config = config
        xf = config.crossfade_samples
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(xf) + 0.5) / max(xf, 1))
        self._fade_in = ramp.astype(np.float64)
        self._reset()

    def _reset(self) -> None:
        self._codes = np.zeros((0, self.spec.tokens_per_frame), dtype=np.int64)
        self._first_frame = 0  # absolute index of self._codes[0]
        self._out_pos = 0  # absolute samples emitted so far
        self._tail = np.zeros(0, dtype=np.float64)  # previous window's audio at [_out_pos, +len)

    def _decode_frames(self, codes: np.ndarray) -> np.ndarray:
        self._codes = np.concatenate([self._codes, codes.astype(np.int64)])
        ready = self._first_frame + len(self._codes) - self.config.lookahead_frames
        return self._emit(ready, final=False)

    def _flush(self) -> np.ndarray:
        return self._emit(self._first_frame + len(self._codes), final=True)

    def _emit(self, ready_frames: int, final: bool) -> np.ndarray:
        spf = self.spec.samples_per_frame
        end = ready_frames * spf
        if end <= self._out_pos + len(self._tail) and not (final and len(self._tail)):
            return np.zeros(0, dtype=np.float32)
        need = self._out_pos // spf
        start = max(self._first_frame, need - self.config.context_frames)
        window = self._codes[start - self._first_frame :]
        audio = np.asarray(self.decode_fn(window), dtype=np.float64).reshape(-1)
        if audio.size != len(window) * spf:
            raise ValueError(f"decode_fn returned {audio.size} samples for {len(window)} frames")
        seg = audio[self._out_pos - start * spf : max(end, self._out_pos) - start * spf].copy()
        n_tail = min(len(self._tail), len(seg))
        if n_tail:
            fade = self._fade_in[len(self._fade_in) - len(self._tail) :][:n_tail]
            seg[:n_tail] = self._tail[:n_tail] * (1.0 - fade) + seg[:n_tail] * fade
        hold = 0 if final else min(self.config.crossfade_samples, max(len(seg) - n_tail, 0))
        out, self._tail = seg[: len(seg) - hold], seg[len(seg) - hold :]
        self._out_pos += len(out)
        keep_from = max(self._first_frame, self._out_pos // spf - self.config.context_frames)
        self._codes = self._codes[keep_from - self._first_frame :]
        self._first_frame = keep_from
        return out.astype(np.float32)


def measure_receptive_field(
    decode_fn: DecodeFn,
    spec: CodecSpec,
    *,
    probe_frames: int = 48,
    trials: int = 4,
    atol: float = 0.0,
    seed: int = 0,
) -> tuple[int, int]:
    """Empirical ``(context_frames, lookahead_frames)`` for ``decode_fn``.

    Changes one frame in the middle of random codes and sees which output
    frames move: later frames moving means left context is needed, earlier
    frames moving means lookahead is needed.  Use it to set
    :class:`OverlapConfig` for a new codec instead of guessing.
    """
    rng = np.random.default_rng(seed)
    sizes = np.asarray(spec.codebook_sizes)[np.asarray(spec.slot_codebooks)]
    spf = spec.samples_per_frame
    mid = probe_frames // 2
    left = right = 0
    for _ in range(trials):
        codes = rng.integers(0, sizes[None, :], size=(probe_frames, spec.tokens_per_frame))
        base = np.asarray(decode_fn(codes), dtype=np.float64).reshape(-1)
        changed = codes.copy()
        changed[mid] = (codes[mid] + rng.integers(1, sizes)) % sizes
        diff = np.abs(np.asarray(decode_fn(changed), dtype=np.float64).reshape(-1) - base) > atol
        frames = np.nonzero(diff.reshape(probe_frames, spf).any(axis=1))[0]
        if frames.size:
            left = max(left, int(frames.max()) - mid)
            right = max(right, mid - int(frames.min()))
    if left >= mid or right >= mid:
        raise ValueError("receptive field not contained in the probe; raise probe_frames")
    return left, right
