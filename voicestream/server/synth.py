"""What the server needs from a voice: the :class:`Synthesizer` protocol, and an adapter for
:class:`voicestream.voice.Voice`.

The server is written against this small protocol rather than against ``Voice`` so that
transport, scheduling and models stay separate: a synthesizer is a *blocking* iterator
of float32 PCM chunks (the server runs it on a worker thread), it checks ``cancel``
between chunks, and it fills a :class:`SegmentStats` as it goes.  One loaded
synthesizer is shared by every session; it must allow concurrent ``stream`` calls.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..config import SamplingConfig

__all__ = [
    "SegmentStats",
    "SynthesisOptions",
    "Synthesizer",
    "VoiceSynthesizer",
    "VoiceUnavailableError",
    "load_voice_synthesizer",
]


@dataclass(frozen=True)
class SynthesisOptions:
    """Per-session decoding options (validated by the protocol layer)."""

    rule: str = "greedy"
    gamma: int = 4
    temperature: float = 0.0
    seed: int = 0
    speed: float = 1.0


@dataclass
class SegmentStats:
    """What one ``stream`` call cost; filled by the synthesizer while it runs."""

    text: str = ""
    audio_samples: int = 0
    tokens: int = 0
    target_forwards: int = 0
    drafted_tokens: int = 0
    accepted_drafted: int = 0
    finish_reason: str | None = None

    def absorb_generation(self, gen: dict) -> None:
        """Copy the counters of a :meth:`GenerationStats.as_dict`."""
        self.tokens = int(gen.get("new_tokens", 0))
        self.target_forwards = int(gen.get("target_forwards", 0))
        self.drafted_tokens = int(gen.get("drafted_tokens", 0))
        self.accepted_drafted = int(gen.get("accepted_drafted", 0))
        self.finish_reason = gen.get("finish_reason", self.finish_reason)


@runtime_checkable
class Synthesizer(Protocol):
    """A voice the server can stream.

    ``stream`` blocks and yields mono float32 PCM at ``sample_rate``; it must stop
    within one model step once ``cancel`` is set, and be safe to call from several
    threads at once.  ``supports_speed`` tells whether ``options.speed != 1`` is honoured.
    """

    name: str
    sample_rate: int
    supports_speed: bool

    def stream(
        self, text: str, options: SynthesisOptions, cancel: threading.Event, stats: SegmentStats
    ) -> Iterator[np.ndarray]: ...


class VoiceUnavailableError(RuntimeError):
    """The trained-voice package (``voicestream.voice``) is not installed in this tree."""


class VoiceSynthesizer:
    """Adapter: :class:`voicestream.voice.Voice` -> :class:`Synthesizer`."""

    supports_speed = False

    def __init__(self, voice, name: str = "default") -> None:
        self.voice = voice
        self.name = name
        self.sample_rate = int(voice.sample_rate)

    def _spec_config(self, text: str, options: SynthesisOptions):
        base = self.voice.spec_config
        return base.with_(
            rule=options.rule,
            sampling=SamplingConfig(temperature=options.temperature),
            gamma=options.gamma,
            gamma_max=max(base.gamma_max, options.gamma),
            seed=options.seed,
            max_new_tokens=min(base.max_new_tokens, self.voice.max_new_tokens_for(text)),
        )

    def stream(
        self, text: str, options: SynthesisOptions, cancel: threading.Event, stats: SegmentStats
    ) -> Iterator[np.ndarray]:
        from voicestream.voice import SynthesisStats  # present whenever a Voice exists

        vstats = SynthesisStats()
        stats.text = text
        try:
            for pcm in self.voice.stream(text, self._spec_config(text, options), stats=vstats, cancel=cancel):
                stats.audio_samples += int(pcm.size)
                yield pcm
        finally:
            stats.absorb_generation(vstats.generation)
            stats.finish_reason = vstats.finish_reason or stats.finish_reason

    def close(self) -> None:
        self.voice.close()


def load_voice_synthesizer(
    target_dir: str | Path,
    draft_dir: str | Path | None = None,
    *,
    name: str = "default",
    threads: int | None = None,
    batch=None,
    codec_pick: str = "model",
    weights: str = "fp32",
    plan: str = "auto",
) -> VoiceSynthesizer:
    """Load a trained voice from checkpoint directories (imports ``voicestream.voice`` lazily).

    The voice package is developed separately; a tree without it gets a clear error
    instead of an ImportError deep inside a request.
    """
    try:
        from voicestream.voice import Voice
    except ImportError as exc:
        raise VoiceUnavailableError(
            "voicestream.voice is not available in this installation, so trained voices cannot be "
            "loaded; use --test-voice for the built-in test synthesizer"
        ) from exc
    t0 = time.perf_counter()
    voice = Voice.load(target_dir, draft_dir, threads=threads, batch=batch, codec_pick=codec_pick,
                       weights=weights, plan=plan)
    synth = VoiceSynthesizer(voice, name=name)
    synth.load_seconds = time.perf_counter() - t0
    return synth
