"""Orpheus TTS (canopylabs; Llama-3.2-3B backbone, SNAC 24 kHz codec).

Token layout (verified against Orpheus' public inference and data-preparation code; see
docs/adapters.md): the Llama-3 tokenizer's 128256 ids, then ten special ids, then seven
blocks of 4096 audio ids -- block ``p`` for frame position ``p`` -- so an audio token is
``128266 + p * 4096 + code``.  One frame is one coarse SNAC step (85.3 ms), written as::

    position:  0    1     2     3     4     5     6
    code:      c0   c1a   c2a   c2b   c1b   c2c   c2d

(``c1a``/``c1b`` the two codebook-1 steps, ``c2a..c2d`` the four codebook-2 steps of the
frame).  Prompt: ``start_of_human, <|begin_of_text|>, "voice: text", <|eot_id|>,
end_of_human, start_of_ai, start_of_speech``; the model stops with ``end_of_speech``.

Streaming: Orpheus' reference server re-decodes the last 4 frames whenever a frame
completes and emits the second (1 frame of left context, 2 of lookahead).  The default
here keeps its 2-frame lookahead (the same latency) but re-decodes 2 frames of context,
which brings the seam error down ~30x; ``window="exact"`` (3 + 3 frames) equals
whole-utterance decoding, ``window="reference"`` is the reference geometry.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voicestream.codec.base import Codec
from voicestream.codec.streaming import OverlapConfig

from ..codecs.registry import resolve_codec
from .base import FamilyAdapter, FamilyDefaults, as_window
from .layout import AudioLayout
from .text import TextEncoder, load_tokenizer

__all__ = [
    "ORPHEUS_CODEC_SLOTS",
    "ORPHEUS_VOCAB_SIZE",
    "ORPHEUS_VOICES",
    "ORPHEUS_WINDOWS",
    "OrpheusAdapter",
    "OrpheusIds",
    "orpheus_layout",
]


@dataclass(frozen=True)
class OrpheusIds:
    """Special ids of Orpheus checkpoints (Llama-3 vocabulary of 128256 + added tokens)."""

    begin_of_text: int = 128000
    end_of_text: int = 128009  # <|eot_id|>
    start_of_speech: int = 128257
    end_of_speech: int = 128258
    start_of_human: int = 128259
    end_of_human: int = 128260
    start_of_ai: int = 128261
    end_of_ai: int = 128262
    pad: int = 128263
    audio_base: int = 128266  # 128256 + 10: <custom_token_10>, code 0 of position 0
    codebook_size: int = 4096


# LM frame position -> slot of SnacCodec's natural frame (c0 | c1a c1b | c2a c2b c2c c2d)
ORPHEUS_CODEC_SLOTS = (0, 1, 3, 4, 2, 5, 6)
ORPHEUS_VOCAB_SIZE = 156940  # config.vocab_size of the released checkpoints
ORPHEUS_VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")  # English finetune

ORPHEUS_WINDOWS = {
    "reference": OverlapConfig(context_frames=1, lookahead_frames=2),
    "balanced": OverlapConfig(context_frames=2, lookahead_frames=2),
    "exact": OverlapConfig(context_frames=3, lookahead_frames=3),
}

# Orpheus' reference sampling (temperature 0.6, top-p 0.8, repetition penalty 1.3); ~1200
# tokens (14.6 s) is its usual cap, 30 s here with a text-sized budget below that
ORPHEUS_DEFAULTS = FamilyDefaults(
    temperature=0.6, top_p=0.8, repetition_penalty=1.3, max_seconds=30.0, seconds_per_char=0.1, floor_s=2.0
)


def orpheus_layout(ids: OrpheusIds = OrpheusIds()) -> AudioLayout:
    offsets = tuple(ids.audio_base + p * ids.codebook_size for p in range(7))
    return AudioLayout(offsets, (ids.codebook_size,) * 7, ORPHEUS_CODEC_SLOTS)


class OrpheusAdapter(FamilyAdapter):
    """Orpheus prompt format, SNAC layout and streaming window.

    ``voice``: a speaker name the finetuned model knows (``tara`` ... ``zoe``), or ``None``
    for the pretrained model's plain-text prompt.  ``codec`` must be a 24 kHz SNAC
    (:class:`~voicestream.adapters.codecs.SnacCodec`).
    """

    name = "orpheus"

    def __init__(
        self,
        tokenizer,
        codec: Codec,
        *,
        voice: str | None = "tara",
        window: str | dict | OverlapConfig = "balanced",
        ids: OrpheusIds = OrpheusIds(),
        defaults: FamilyDefaults = ORPHEUS_DEFAULTS,
    ) -> None:
        spec = codec.spec
        if spec.tokens_per_frame != 7 or spec.slot_codebooks != (0, 1, 1, 2, 2, 2, 2) or set(
            spec.codebook_sizes
        ) != {ids.codebook_size}:
            raise ValueError(f"Orpheus needs SNAC 24 kHz codes (3 codebooks of 4096, 1+2+4 per frame), got {spec}")
        window = as_window(window, ORPHEUS_WINDOWS)
        self.text = TextEncoder(tokenizer)
        self.codec = codec
        self.ids = ids
        self.voice = voice or None
        self.window = window
        self.defaults = defaults
        self.layout = orpheus_layout(ids)
        self.start_ids = (ids.start_of_speech,)
        # end_of_speech ends a clip; eot/end_of_ai are accepted too so a model that skips
        # end_of_speech is not forced to babble on
        self.stop_ids = (ids.end_of_speech, ids.end_of_ai, ids.end_of_text)

    def build_prompt(self, text: str) -> list[int]:
        i = self.ids
        body = f"{self.voice}: {text}" if self.voice else text
        return [
            i.start_of_human, i.begin_of_text, *self.text.encode(body),
            i.end_of_text, i.end_of_human, i.start_of_ai, i.start_of_speech,
        ]

    @classmethod
    def load(cls, target_dir, *, tokenizer=None, codec=None, device="cpu", dtype=None, **options) -> OrpheusAdapter:
        """Tokenizer from ``target_dir``; ``codec``: a SNAC 24 kHz directory, a Codec, or ``"random"``."""
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(Path(target_dir))
        hint = " (huggingface-cli download hubertsiuzdak/snac_24khz --local-dir DIR)"
        return cls(tokenizer, resolve_codec(codec, "snac", device=device, dtype=dtype, hint=hint), **options)
