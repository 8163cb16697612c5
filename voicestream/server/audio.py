"""Audio plumbing between a synthesizer and the wire: streaming resampling, sample
encodings (s16le, G.711 mu-law), WAV headers, and per-utterance framing.

Why streaming resampling: a synthesizer yields PCM in chunks of arbitrary length;
resampling each chunk on its own would put an edge transient at every seam.
:class:`StreamingResampler` evaluates the same polyphase filter as
:func:`voicestream.codec.resample` over a rolling input buffer, so the concatenated
output equals resampling the whole utterance at once.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from math import gcd

import numpy as np

from ..codec.resample import ResamplerConfig, _filter_bank

__all__ = [
    "AUDIBLE_THRESHOLD",
    "FrameChunk",
    "StreamingResampler",
    "UtteranceAudio",
    "encode",
    "first_audible",
    "mulaw_decode",
    "mulaw_encode",
    "pcm16_decode",
    "pcm16_encode",
    "wav_header",
]

#: |sample| above this (about -40 dBFS) counts as audible for TTFA and silence trimming.
AUDIBLE_THRESHOLD = 0.01


class StreamingResampler:
    """Chunked band-limited resampling whose output equals one-shot :func:`resample`."""

    def __init__(self, orig_sr: int, target_sr: int, config: ResamplerConfig | None = None) -> None:
        if orig_sr <= 0 or target_sr <= 0:
            raise ValueError("sample rates must be positive")
        self.orig_sr, self.target_sr = int(orig_sr), int(target_sr)
        self.passthrough = self.orig_sr == self.target_sr
        g = gcd(self.orig_sr, self.target_sr)
        self.up, self.down = self.target_sr // g, self.orig_sr // g
        if not self.passthrough:
            self.bank, self.first = _filter_bank(self.up, self.down, config or ResamplerConfig())
            self.taps = self.bank.shape[1]
        self.reset()

    def reset(self) -> None:
        self._n_in = 0  # input samples received
        self._n_out = 0  # output samples produced
        if not self.passthrough:
            # input index of _buf[0]; resample() pads -first zeros on the left
            self._buf_start = self.first
            self._buf = np.zeros(-self.first, dtype=np.float64)

    def _produce(self, limit: int) -> np.ndarray:
        """Outputs [n_out, limit) from the buffer (which must cover their taps)."""
        if limit <= self._n_out:
            return np.zeros(0, dtype=np.float32)
        n = np.arange(self._n_out, limit, dtype=np.int64)
        pos = n * self.down
        base, phase = pos // self.up, pos % self.up
        idx = (base + self.first - self._buf_start)[:, None] + np.arange(self.taps)[None, :]
        out = np.einsum("ij,ij->i", self.bank[phase], self._buf[idx])
        self._n_out = limit
        keep_from = (self._n_out * self.down) // self.up + self.first  # oldest input still needed
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return out.astype(np.float32)

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Add input; return every output sample whose filter support is complete."""
        x = np.asarray(audio, dtype=np.float64).reshape(-1)
        if self.passthrough:
            self._n_in += x.size
            return x.astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += x.size
        # output n needs input up to base(n) + first + taps - 1 <= n_in - 1
        last_base = self._n_in - self.first - self.taps
        if last_base < 0:
            return np.zeros(0, dtype=np.float32)
        # base(n) = floor(n*down/up) <= last_base  <=>  n < (last_base+1)*up/down
        limit = -(-(last_base + 1) * self.up // self.down)
        total = -(-self._n_in * self.up // self.down)
        return self._produce(min(limit, total))

    def flush(self) -> np.ndarray:
        """End of input: the remaining outputs (zero right padding, like :func:`resample`)."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        total = -(-self._n_in * self.up // self.down)
        self._buf = np.concatenate([self._buf, np.zeros(self.taps + 1)])
        out = self._produce(total)
        self.reset()
        return out


# --- sample encodings ------------------------------------------------------------------------
def pcm16_encode(audio: np.ndarray) -> bytes:
    """float [-1, 1] -> signed 16-bit little-endian bytes (clipped, rounded)."""
    x = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767)
    return x.astype("<i2").tobytes()


def pcm16_decode(data: bytes) -> np.ndarray:
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)).astype(np.float32)


_MULAW_BIAS = 0x84
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def mulaw_encode(audio: np.ndarray) -> bytes:
    """float -> G.711 mu-law bytes (the telephony encoding; 8 bits per sample).

    Follows the reference 14-bit formulation (same bytes as CPython's ``audioop.lin2ulaw``).
    """
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 0x1FDF) + (_MULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_END, mag, side="left")
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return ((code ^ mask) & 0xFF).astype(np.uint8).tobytes()


def mulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return (np.where(sign != 0, -mag, mag).astype(np.float32) / np.float32(32768.0)).astype(np.float32)


BYTES_PER_SAMPLE = {"pcm_s16le": 2, "mulaw": 1}


def encode(audio: np.ndarray, encoding: str) -> bytes:
    if encoding == "pcm_s16le":
        return pcm16_encode(audio)
    if encoding == "mulaw":
        return mulaw_encode(audio)
    raise ValueError(f"unknown encoding {encoding!r}")


def decode(data: bytes, encoding: str) -> np.ndarray:
    if encoding == "pcm_s16le":
        return pcm16_decode(data)
    if encoding == "mulaw":
        return mulaw_decode(data)
    raise ValueError(f"unknown encoding {encoding!r}")


def wav_header(sample_rate: int, *, channels: int = 1, bits: int = 16, data_bytes: int | None = None) -> bytes:
    """RIFF/WAVE header; ``data_bytes=None`` writes 0xFFFFFFFF sizes for a stream of unknown length
    (what streaming TTS APIs send; players read until the connection ends)."""
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    block = channels * bits // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", riff, b"WAVE", b"fmt ", 16, 1, channels, sample_rate, sample_rate * block, block, bits, b"data", size,
    )


def first_audible(audio: np.ndarray, threshold: float = AUDIBLE_THRESHOLD) -> int | None:
    """Index of the first sample with |x| > threshold, or None."""
    hits = np.flatnonzero(np.abs(np.asarray(audio)) > threshold)
    return int(hits[0]) if hits.size else None


# --- per-utterance framing ---------------------------------------------------------------------
@dataclass
class FrameChunk:
    """Encoded audio frames ready for the wire (header added at send time)."""

    payloads: list[bytes]
    sample_offset: int  # utterance sample index of payloads[0]
    samples: list[int]  # samples per payload
    audible: bool  # the chunk contains the utterance's first audible sample
    segment_start: bool


@dataclass
class UtteranceAudio:
    """Model-rate float PCM in, wire frames out, for one utterance.

    Carries the resampler state across the utterance's segments (the audio is one
    continuous signal) and trims the utterance's leading silence down to
    ``preroll_ms``: a TTS model's first tens of milliseconds are often near-silent,
    and sending them only delays what the listener hears.
    """

    model_rate: int
    sample_rate: int
    encoding: str
    frame_ms: int
    trim_leading_silence: bool = True
    preroll_ms: int = 20
    threshold: float = AUDIBLE_THRESHOLD
    _resampler: StreamingResampler = field(init=False)
    _held: np.ndarray = field(init=False)
    heard: bool = field(init=False, default=False)
    samples_out: int = field(init=False, default=0)
    _segment_start: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        self._resampler = StreamingResampler(self.model_rate, self.sample_rate)
        self._held = np.zeros(0, dtype=np.float32)
        self.frame_samples = max(1, self.sample_rate * self.frame_ms // 1000)
        self.preroll = self.sample_rate * self.preroll_ms // 1000

    def begin_segment(self) -> None:
        self._segment_start = True

    def push(self, pcm: np.ndarray) -> FrameChunk | None:
        return self._frames(self._resampler.push(pcm))

    def finish(self) -> FrameChunk | None:
        """End of the utterance: flush the resampler tail."""
        return self._frames(self._resampler.flush(), final=True)

    def _frames(self, audio: np.ndarray, final: bool = False) -> FrameChunk | None:
        audible = False
        if not self.heard:
            audio = np.concatenate([self._held, audio]) if self._held.size else audio
            first = first_audible(audio, self.threshold)
            if first is None:
                if self.trim_leading_silence:
                    self._held = audio[-self.preroll :] if self.preroll else audio[:0]
                    return None
            else:
                self.heard, audible = True, True
                if self.trim_leading_silence:
                    audio = audio[max(0, first - self.preroll) :]
                self._held = np.zeros(0, dtype=np.float32)
        if audio.size == 0:
            return None
        payloads, samples = [], []
        for i in range(0, audio.size, self.frame_samples):
            part = audio[i : i + self.frame_samples]
            payloads.append(encode(part, self.encoding))
            samples.append(part.size)
        chunk = FrameChunk(payloads, self.samples_out, samples, audible, self._segment_start)
        self._segment_start = False
        self.samples_out += audio.size
        return chunk
