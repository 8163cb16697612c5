"""Built-in codec: Codec2 3200 bps (8 kHz, 20 ms / 64-bit frames) via ``pycodec2``.

Each 64-bit frame is cut into its quantiser fields (voicing, pitch Wo,
energy, ten LSP deltas; layout in ``data/codec2_3200_layout.json``) and the
fields are grouped into a few codebooks.  Gray-coded fields are converted to
natural binary so a code's value follows the quantiser level, which is
easier for a small LM than raw byte splits.  The mapping is a bijection on
the 64 bits, so token round trips are bit-exact by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ._codec2_rng import INITIAL_STATE, rng
from .base import Codec, CodecSpec, StreamingDecoder

__all__ = [
    "BitField",
    "Codec2Codec",
    "Codec2StreamingDecoder",
    "FrameLayout",
    "deterministic",
    "float_to_pcm16",
    "load_layout",
    "pcm16_to_float",
]

_LAYOUT_FILE = "codec2_3200_layout.json"


def _gray_encode(n: np.ndarray) -> np.ndarray:
    return n ^ (n >> np.uint64(1))


def _gray_decode(g: np.ndarray) -> np.ndarray:
    n = g.copy()
    for s in (1, 2, 4, 8, 16, 32):
        n ^= n >> np.uint64(s)
    return n


@dataclass(frozen=True)
class BitField:
    """One quantiser index inside the frame bitstream."""

    name: str
    bits: int
    gray: bool
    shift: int  # position of the field's LSB counted from the frame's LSB


@dataclass(frozen=True)
class FrameLayout:
    """Maps packed codec frames (MSB-first bytes) <-> per-codebook codes."""

    mode: int
    sample_rate: int
    samples_per_frame: int
    bits_per_frame: int
    fields: tuple[BitField, ...]
    codebook_names: tuple[str, ...]
    codebook_fields: tuple[tuple[int, ...], ...]  # field indices, most significant first

    @property
    def bytes_per_frame(self) -> int:
        return (self.bits_per_frame + 7) // 8

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(1 << sum(self.fields[i].bits for i in f) for f in self.codebook_fields)

    def spec(self) -> CodecSpec:
        return CodecSpec(
            name=f"codec2-{self.mode}",
            sample_rate=self.sample_rate,
            samples_per_frame=self.samples_per_frame,
            codebook_sizes=self.codebook_sizes,
            codebook_names=self.codebook_names,
            ordinal_fields=tuple(tuple(self.fields[i].bits for i in f) for f in self.codebook_fields),
        )

    def _frame_words(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames, dtype=np.uint8).reshape(-1, self.bytes_per_frame)
        words = np.zeros(frames.shape[0], dtype=np.uint64)
        for j in range(self.bytes_per_frame):
            words = (words << np.uint64(8)) | frames[:, j].astype(np.uint64)
        return words >> np.uint64(8 * self.bytes_per_frame - self.bits_per_frame)

    def frames_to_codes(self, frames: np.ndarray) -> np.ndarray:
        """``(n, bytes_per_frame)`` uint8 frames -> ``(n, codebooks)`` int64 codes."""
        words = self._frame_words(frames)
        values = []
        for f in self.fields:
            v = (words >> np.uint64(f.shift)) & np.uint64((1 << f.bits) - 1)
            values.append(_gray_decode(v) if f.gray else v)
        codes = np.zeros((words.shape[0], len(self.codebook_fields)), dtype=np.int64)
        for k, idx in enumerate(self.codebook_fields):
            acc = np.zeros_like(words)
            for i in idx:
                acc = (acc << np.uint64(self.fields[i].bits)) | values[i]
            codes[:, k] = acc.astype(np.int64)
        return codes

    def codes_to_frames(self, codes: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`frames_to_codes`."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(self.codebook_fields):
            raise ValueError(f"codes must be (frames, {len(self.codebook_fields)}), got {codes.shape}")
        sizes = np.asarray(self.codebook_sizes)
        if codes.size and (codes.min() < 0 or np.any(codes >= sizes[None, :])):
            raise ValueError("code out of range for its codebook")
        words = np.zeros(codes.shape[0], dtype=np.uint64)
        for k, idx in enumerate(self.codebook_fields):
            acc = codes[:, k].astype(np.uint64)
            for i in reversed(idx):
                f = self.fields[i]
                v = acc & np.uint64((1 << f.bits) - 1)
                acc = acc >> np.uint64(f.bits)
                if f.gray:
                    v = _gray_encode(v)
                words |= v << np.uint64(f.shift)
        words = words << np.uint64(8 * self.bytes_per_frame - self.bits_per_frame)
        out = np.zeros((codes.shape[0], self.bytes_per_frame), dtype=np.uint8)
        for j in range(self.bytes_per_frame - 1, -1, -1):
            out[:, j] = (words & np.uint64(0xFF)).astype(np.uint8)
            words = words >> np.uint64(8)
        return out


def load_layout(path: str | Path | None = None) -> FrameLayout:
    """Read a frame layout JSON (default: the packaged Codec2 3200 layout)."""
    if path is None:
        text = resources.files("voicestream.codec").joinpath("data", _LAYOUT_FILE).read_text()
    else:
        text = Path(path).read_text()
    raw = json.loads(text)
    total = int(raw["bits_per_frame"])
    fields: list[BitField] = []
    used = 0
    for f in raw["fields"]:
        used += int(f["bits"])
        fields.append(BitField(f["name"], int(f["bits"]), bool(f["gray"]), total - used))
    if used != total:
        raise ValueError(f"layout fields cover {used} bits, frame has {total}")
    index = {f.name: i for i, f in enumerate(fields)}
    cb_fields = tuple(tuple(index[n] for n in cb["fields"]) for cb in raw["codebooks"])
    flat = sorted(i for cb in cb_fields for i in cb)
    if flat != list(range(len(fields))):
        raise ValueError("every field must be in exactly one codebook")
    return FrameLayout(
        mode=int(raw["mode"]),
        sample_rate=int(raw["sample_rate"]),
        samples_per_frame=int(raw["samples_per_frame"]),
        bits_per_frame=total,
        fields=tuple(fields),
        codebook_names=tuple(cb["name"] for cb in raw["codebooks"]),
        codebook_fields=cb_fields,
    )


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 (clipped, rounded)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    return (np.asarray(pcm, dtype=np.float32) / np.float32(32768.0)).astype(np.float32)


def _new_codec2(mode: int):
    import pycodec2  # imported lazily so `import voicestream` works without it

    return pycodec2.Codec2(mode)


class Codec2Codec(Codec):
    """Codec2 with a field-aware flat token layout.

    Encoder and decoder are stateful frame by frame, so every whole-utterance
    call uses a fresh pycodec2 instance (same as the reference round trip).
    """

    def __init__(self, layout: FrameLayout | None = None) -> None:
        self.layout = layout or load_layout()
        self.spec = self.layout.spec()
        probe = _new_codec2(self.layout.mode)
        if probe.samples_per_frame() != self.layout.samples_per_frame or (
            probe.bits_per_frame() != self.layout.bits_per_frame
        ):
            raise ValueError("layout does not match the pycodec2 mode")

    # ----- raw bitstream --------------------------------------------------
    def encode_frames(self, audio: np.ndarray) -> np.ndarray:
        """Audio -> packed frames ``(n, bytes_per_frame)`` uint8 (last frame zero-padded)."""
        pcm = float_to_pcm16(audio)
        spf = self.layout.samples_per_frame
        n = self.spec.num_frames(pcm.size)
        padded = np.zeros(n * spf, dtype=np.int16)
        padded[: pcm.size] = pcm
        enc = _new_codec2(self.layout.mode)
        out = np.zeros((n, self.layout.bytes_per_frame), dtype=np.uint8)
        for i in range(n):
            out[i] = np.frombuffer(enc.encode(np.ascontiguousarray(padded[i * spf : (i + 1) * spf])), dtype=np.uint8)
        return out

    def decode_frames(self, frames: np.ndarray) -> np.ndarray:
        """Packed frames -> float32 audio, using a fresh decoder and noise seed.

        Deterministic (when :data:`deterministic` is true): the same frames
        always give the same samples, whatever was decoded before.
        """
        return _decode_with(_new_codec2(self.layout.mode), frames, [INITIAL_STATE])

    # ----- Codec API ------------------------------------------------------
    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self.layout.frames_to_codes(self.encode_frames(audio))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.decode_frames(self.layout.codes_to_frames(codes))

    def streaming_decoder(self) -> Codec2StreamingDecoder:
        return Codec2StreamingDecoder(self.layout)


#: True when libcodec2's shared noise generator could be isolated per decoder,
#: i.e. decoding is reproducible and streaming output equals whole decode exactly.
deterministic: bool = rng.available


def _decode_with(dec, frames: np.ndarray, rng_state: list[int]) -> np.ndarray:
    frames = np.asarray(frames, dtype=np.uint8)
    with rng.using(rng_state):
        pcm = [np.asarray(dec.decode(bytes(f)), dtype=np.int16) for f in frames]
    return pcm16_to_float(np.concatenate(pcm)) if pcm else np.zeros(0, dtype=np.float32)


class Codec2StreamingDecoder(StreamingDecoder):
    """Keeps ONE Codec2 decoder alive across pushes.

    Codec2 interpolates LSPs/energy/pitch from the previous frame and carries
    phase; restarting per chunk would click.  Decoding frame by frame with a
    persistent instance (and its own noise-generator state) makes chunked
    output identical to whole decode.
    """

    def __init__(self, layout: FrameLayout) -> None:
        super().__init__(layout.spec())
        self.layout = layout
        self._dec = _new_codec2(layout.mode)
        self._rng_state = [INITIAL_STATE]

    def _decode_frames(self, codes: np.ndarray) -> np.ndarray:
        return _decode_with(self._dec, self.layout.codes_to_frames(codes), self._rng_state)

    def _reset(self) -> None:
        self._dec = _new_codec2(self.layout.mode)
        self._rng_state = [INITIAL_STATE]
