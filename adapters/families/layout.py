"""Where a family's LM keeps its codec tokens, and the grammar that keeps it there.

A codec-token LM writes audio as frames of ``P`` tokens.  Frame position ``p`` holds a code
of some codec slot, written as LM id ``slot_offsets[p] + code``.  Families differ in the
offsets (Orpheus: a separate 4096-id range per position; NeuTTS: one 65536-id range) and
in the interleave (Orpheus writes SNAC's codes as c0, c1a, c2a, c2b, c1b, c2c, c2d while
the codec frame is c0, c1a, c1b, c2a..c2d): ``codec_slots[p]`` is the codec slot that
position ``p`` fills.

:class:`AudioConstraint` is the :class:`~voicestream.spec.constraint.TokenConstraint` that
masks draft and target alike: after an audio-start marker only the current position's id
range is allowed, and a stop id only at a frame boundary -- so every committed token is a
legal code and the streaming codec decoder never sees a torn frame.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from voicestream.codec.base import CodecSpec, TokenLayoutError

__all__ = ["PRE_AUDIO", "AudioConstraint", "AudioLayout", "FrameAssembler"]

PRE_AUDIO = -1  # constraint state outside audio (before the start marker, or after text)


@dataclass(frozen=True)
class AudioLayout:
    """LM ids of one frame: ``slot_offsets[p] + code`` at position ``p``, code < ``slot_sizes[p]``."""

    slot_offsets: tuple[int, ...]
    slot_sizes: tuple[int, ...]
    codec_slots: tuple[int, ...] = ()  # codec slot filled by each position; empty = identity
    _inverse: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offsets = tuple(int(o) for o in self.slot_offsets)
        sizes = tuple(int(s) for s in self.slot_sizes)
        if not offsets or len(offsets) != len(sizes):
            raise ValueError("slot_offsets and slot_sizes must be non-empty and of equal length")
        if min(offsets) < 0 or min(sizes) <= 0:
            raise ValueError("offsets must be >= 0 and sizes > 0")
        slots = tuple(int(s) for s in self.codec_slots) or tuple(range(len(offsets)))
        if sorted(slots) != list(range(len(offsets))):
            raise ValueError(f"codec_slots must be a permutation of 0..{len(offsets) - 1}, got {slots}")
        object.__setattr__(self, "slot_offsets", offsets)
        object.__setattr__(self, "slot_sizes", sizes)
        object.__setattr__(self, "codec_slots", slots)
        inverse = [0] * len(slots)
        for p, s in enumerate(slots):
            inverse[s] = p
        object.__setattr__(self, "_inverse", tuple(inverse))

    @classmethod
    def for_codec(
        cls, spec: CodecSpec, slot_offsets: Iterable[int], codec_slots: Iterable[int] = ()
    ) -> AudioLayout:
        """Sizes taken from the codec: position ``p`` holds codes of codec slot ``codec_slots[p]``."""
        slots = tuple(codec_slots) or tuple(range(spec.tokens_per_frame))
        if len(slots) != spec.tokens_per_frame:
            raise ValueError(f"codec {spec.name} has {spec.tokens_per_frame} slots per frame, layout has {len(slots)}")
        sizes = tuple(spec.codebook_sizes[spec.slot_codebooks[s]] for s in slots)
        return cls(tuple(slot_offsets), sizes, slots)

    @property
    def tokens_per_frame(self) -> int:
        return len(self.slot_offsets)

    @property
    def id_ranges(self) -> tuple[tuple[int, int], ...]:
        """Half-open LM id range of each frame position."""
        return tuple((o, o + s) for o, s in zip(self.slot_offsets, self.slot_sizes))

    @property
    def max_id(self) -> int:
        return max(o + s for o, s in zip(self.slot_offsets, self.slot_sizes)) - 1

    def is_audio(self, token: int) -> bool:
        return any(lo <= token < hi for lo, hi in self.id_ranges)

    # ----- arrays --------------------------------------------------------------------
    def codes_to_ids(self, codes: np.ndarray) -> np.ndarray:
        """Codec codes ``(frames, codec slots)`` -> flat LM ids in the family's frame order."""
        codes = np.asarray(codes, dtype=np.int64)
        p = self.tokens_per_frame
        if codes.ndim != 2 or codes.shape[1] != p:
            raise TokenLayoutError(f"codes must have shape (frames, {p}), got {codes.shape}")
        ordered = codes[:, list(self.codec_slots)]
        sizes = np.asarray(self.slot_sizes)
        if ordered.size and (ordered.min() < 0 or np.any(ordered >= sizes[None, :])):
            raise TokenLayoutError("code out of range for its slot")
        return (ordered + np.asarray(self.slot_offsets)[None, :]).reshape(-1)

    def ids_to_codes(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Flat LM ids (whole frames, starting at position 0) -> codec codes ``(frames, slots)``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        p = self.tokens_per_frame
        if ids.size % p:
            raise TokenLayoutError(f"{ids.size} ids is not a whole number of {p}-token frames")
        rel = ids.reshape(-1, p) - np.asarray(self.slot_offsets)[None, :]
        bad = np.nonzero((rel < 0) | (rel >= np.asarray(self.slot_sizes)[None, :]))
        if bad[0].size:
            f, pos = int(bad[0][0]), int(bad[1][0])
            lo, hi = self.id_ranges[pos]
            raise TokenLayoutError(
                f"LM id {int(ids[f * p + pos])} at frame {f} position {pos} is outside [{lo}, {hi})"
            )
        return rel[:, list(self._inverse)]


class FrameAssembler:
    """Collects a stream of LM audio ids into whole frames of codec codes.

    The LM's interleave can put a codec slot's code after a later slot's (Orpheus writes
    c1b after c2b), so codes reach the codec only frame by frame.
    """

    def __init__(self, layout: AudioLayout) -> None:
        self.layout = layout
        self._pending: list[int] = []

    def push(self, ids: Iterable[int]) -> np.ndarray:
        """Add audio ids; return ``(n, slots)`` codes of the frames they complete."""
        self._pending.extend(int(t) for t in ids)
        p = self.layout.tokens_per_frame
        n = len(self._pending) // p * p
        whole, self._pending = self._pending[:n], self._pending[n:]
        return self.layout.ids_to_codes(whole) if whole else np.zeros((0, p), dtype=np.int64)

    @property
    def pending(self) -> int:
        return len(self._pending)


class AudioConstraint:
    """Token grammar for the audio part of a family's output (a ``TokenConstraint``).

    States: :data:`PRE_AUDIO`, or the frame position ``0..P-1`` of the next audio token.
    An audio-start id enters position 0 from anywhere; a legal audio id advances the
    position; anything else (text, an end marker) returns to :data:`PRE_AUDIO`.  Allowed:
    in :data:`PRE_AUDIO` only the start ids; at position ``p`` the ids of ``p``, plus the
    stop ids when ``p == 0`` (end only on a frame boundary).

    Masks are built once, on ``device``, so a step costs an index.  Immutable, hence
    shareable across concurrent generations.
    """

    def __init__(
        self,
        layout: AudioLayout,
        vocab_size: int,
        *,
        start_ids: Iterable[int],
        stop_ids: Iterable[int],
        device: str | torch.device = "cpu",
    ) -> None:
        self.layout = layout
        self.vocab_size = int(vocab_size)
        self.start_ids = frozenset(int(t) for t in start_ids)
        self.stop_ids = frozenset(int(t) for t in stop_ids)
        if not self.start_ids:
            raise ValueError("an audio constraint needs at least one audio-start id")
        used = [layout.max_id, *self.start_ids, *self.stop_ids]
        if max(used) >= self.vocab_size:
            raise ValueError(f"layout/special ids reach {max(used)}, beyond the LM's {self.vocab_size} outputs")
        ranges = layout.id_ranges
        masks = torch.zeros(layout.tokens_per_frame + 1, self.vocab_size, dtype=torch.bool)
        masks[0, sorted(self.start_ids)] = True
        for p, (lo, hi) in enumerate(ranges):
            masks[p + 1, lo:hi] = True
        if self.stop_ids:
            masks[1, sorted(self.stop_ids)] = True
        self._masks = masks.to(device)
        self._ranges = ranges

    def initial(self) -> int:
        return PRE_AUDIO

    def step(self, state: int, token: int) -> int:
        if token in self.start_ids:
            return 0
        if state >= 0:
            lo, hi = self._ranges[state]
            if lo <= token < hi:
                return (state + 1) % self.layout.tokens_per_frame
        return PRE_AUDIO

    def allowed(self, state: int) -> torch.Tensor:
        return self._masks[state + 1]
