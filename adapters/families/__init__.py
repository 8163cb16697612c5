"""Model-family adapters: run third-party codec-token TTS models (Orpheus, NeuTTS, or any
HF causal LM + registered codec described by a config file) through voicestream's
speculative decoder and streaming codec decode.

>>> synth = load_family_synthesizer("orpheus", "models/orpheus-3b", draft="self:8", codec="models/snac_24khz")
>>> for pcm in synth.stream_audio("Hello there."): ...

Family modules are imported on first use (:func:`get_adapter`), so optional codec
packages are only needed for the families actually used.
"""
from __future__ import annotations

from .base import (
    FamilyAdapter,
    FamilyDefaults,
    available_adapters,
    get_adapter,
    register_adapter,
)
from .drafts import parse_self_draft, resolve_draft
from .layout import PRE_AUDIO, AudioConstraint, AudioLayout, FrameAssembler
from .loading import load_family_synthesizer, parse_dtype
from .synthesizer import FamilySynthesizer
from .text import TextEncoder, load_tokenizer

__all__ = [
    "PRE_AUDIO",
    "AudioConstraint",
    "AudioLayout",
    "FamilyAdapter",
    "FamilyDefaults",
    "FamilySynthesizer",
    "FrameAssembler",
    "TextEncoder",
    "available_adapters",
    "get_adapter",
    "load_family_synthesizer",
    "load_tokenizer",
    "parse_dtype",
    "parse_self_draft",
    "register_adapter",
    "resolve_draft",
]
