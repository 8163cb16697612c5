"""What a TTS model family is to voicestream: prompt format, codec-token layout, grammar,
codec and streaming window -- and the registry that finds a family by name.

A :class:`FamilyAdapter` is everything family-specific; the model-independent loop
(speculative decoding, masking, frame assembly, streaming decode, stats) lives in
:class:`~voicestream.adapters.families.synthesizer.FamilySynthesizer`.  Adapters hold no
per-utterance state, so one instance serves concurrent utterances.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from voicestream.codec.base import Codec, StreamingDecoder
from voicestream.codec.streaming import OverlapConfig
from voicestream.config import SamplingConfig

from .layout import AudioConstraint, AudioLayout

__all__ = [
    "FamilyAdapter",
    "FamilyDefaults",
    "as_window",
    "available_adapters",
    "ensure_ids_fit",
    "get_adapter",
    "register_adapter",
]


@dataclass(frozen=True)
class FamilyDefaults:
    """Decoding defaults a family was trained/tuned with (its reference inference code).

    ``temperature``/``top_k``/``top_p`` apply to the sampling rules; the repetition
    penalty applies to every rule (several families loop without it, even greedily).
    ``max_seconds`` caps one utterance; ``seconds_per_char``/``floor_s`` size the token
    budget from the text so a model that never stops cannot run away.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_seconds: float = 30.0
    seconds_per_char: float = 0.12
    floor_s: float = 2.0

    def sampling(self, temperature: float | None = None) -> SamplingConfig:
        """Processing for a sampling rule (``temperature`` overrides the family's)."""
        return SamplingConfig(
            temperature=temperature if temperature else self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
        )

    def greedy(self) -> SamplingConfig:
        return SamplingConfig(temperature=0.0, repetition_penalty=self.repetition_penalty)


class FamilyAdapter(ABC):
    """One TTS model family: how to prompt it and how to read its audio tokens.

    Subclasses set :attr:`name`, build :attr:`layout`, :attr:`codec`, :attr:`start_ids`,
    :attr:`stop_ids` and :attr:`defaults` in ``__init__`` and implement :meth:`build_prompt`.
    :meth:`load` builds one from a checkpoint directory (the path the CLI uses).
    """

    name: ClassVar[str] = "family"
    layout: AudioLayout
    codec: Codec
    start_ids: tuple[int, ...]  # audio-start marker(s); the prompt ends inside audio mode
    stop_ids: tuple[int, ...]  # end of speech (only at frame boundaries)
    defaults: FamilyDefaults = FamilyDefaults()
    window: OverlapConfig | None = None  # streaming window; None = the codec's default
    voice: str | None = None  # what the synthesizer calls this voice
    max_context: int | None = None  # prompt + generation cap below the model's own positions

    @abstractmethod
    def build_prompt(self, text: str) -> list[int]:
        """LM ids that make the model speak ``text``; ends where the first audio token goes."""

    @classmethod
    @abstractmethod
    def load(cls, target_dir: str | Path, *, tokenizer=None, codec=None, device="cpu", dtype=None, **options):
        """Build the adapter for a checkpoint: its tokenizer, the family's codec, options."""

    # ----- derived ---------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.codec.spec.sample_rate

    @property
    def frame_rate_hz(self) -> float:
        return self.codec.spec.frame_rate_hz

    def constraint(self, vocab_size: int, device: str | torch.device = "cpu") -> AudioConstraint:
        return AudioConstraint(self.layout, vocab_size, start_ids=self.start_ids, stop_ids=self.stop_ids, device=device)

    def streaming_decoder(self) -> StreamingDecoder:
        if self.window is not None:
            return self.codec.streaming_decoder(window=self.window)  # type: ignore[call-arg]
        return self.codec.streaming_decoder()

    def token_budget(self, seconds: float) -> int:
        """Tokens for ``seconds`` of audio: whole frames plus the stop token."""
        frames = max(1, math.ceil(seconds * self.frame_rate_hz))
        return frames * self.layout.tokens_per_frame + 1

    def max_new_tokens_for(self, text: str) -> int:
        """A length cap from the text (capped at ``defaults.max_seconds``)."""
        d = self.defaults
        return self.token_budget(min(d.max_seconds, d.floor_s + d.seconds_per_char * len(text)))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (logged by the server at start-up, printed by examples)."""
        return {
            "family": self.name,
            "voice": self.voice,
            "codec": self.codec.spec.name,
            "sample_rate": self.sample_rate,
            "tokens_per_frame": self.layout.tokens_per_frame,
            "frame_ms": round(1000.0 / self.frame_rate_hz, 2),
            "audio_ids": [list(r) for r in self.layout.id_ranges],
            "start_ids": list(self.start_ids),
            "stop_ids": list(self.stop_ids),
        }


# ----- registry ----------------------------------------------------------------------------
_REGISTRY: dict[str, str | type[FamilyAdapter]] = {
    # lazily imported: a family's module may need an optional package (snac, phonemizer)
    "orpheus": "voicestream.adapters.families.orpheus:OrpheusAdapter",
    "neutts": "voicestream.adapters.families.neutts:NeuTTSAdapter",
    "generic": "voicestream.adapters.families.generic:GenericAdapter",
}


def register_adapter(name: str, adapter: type[FamilyAdapter] | str) -> None:
    """Register a family class (or ``"module:Class"`` to import on first use)."""
    _REGISTRY[name] = adapter


def available_adapters() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_adapter(name: str) -> type[FamilyAdapter]:
    """The adapter class registered as ``name`` (``orpheus``, ``neutts``, ``generic``, ...)."""
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; available: {', '.join(available_adapters())}") from None
    if isinstance(entry, str):
        import importlib

        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = entry
    return entry


def as_window(value, named: dict[str, OverlapConfig] | None = None) -> OverlapConfig | None:
    """A streaming window from an :class:`OverlapConfig`, a dict of its fields (config files,
    ``--adapter-option window={...}``) or one of a family's ``named`` windows."""
    if value is None or isinstance(value, OverlapConfig):
        return value
    if isinstance(value, dict):
        return OverlapConfig(**value)
    if isinstance(value, str) and named and value in named:
        return named[value]
    choices = f"one of {sorted(named)}, " if named else ""
    raise ValueError(f"window must be {choices}an OverlapConfig or a dict of its fields, got {value!r}")


def ensure_ids_fit(ids: Sequence[int], vocab_size: int, what: str) -> None:
    """Fail early (at load) when a family's ids do not exist in the checkpoint's vocabulary."""
    bad = [int(i) for i in ids if not 0 <= int(i) < vocab_size]
    if bad:
        raise ValueError(f"{what}: ids {bad[:5]} outside the model's vocabulary of {vocab_size}")
