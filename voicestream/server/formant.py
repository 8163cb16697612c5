"""A real, deterministic test voice: speculative decoding with a tiny random LM pair,
rendered to formant-synthesised audio.

Why not a stub: server tests must exercise what production does -- model work on a
worker thread through the real :class:`SpeculativeDecoder` (its acceptance stats, its
cancellation), streamed chunk by chunk, with audio that has leading silence, pauses at
punctuation, voiced and unvoiced sounds, and a level a listener (and a VAD) can hear.
The trained voice is not available to the server's tests, so this stands in for it.

How: the text is normalised and planned as 20 ms frames per character (vowels long,
consonants short, pauses at spaces and punctuation, plus a quiet lead-in).  The
decoder generates exactly one token per frame; each token perturbs that frame's pitch
and loudness, so the audio depends on what was decoded (greedy + fixed seed gives
bit-identical audio; sampling gives a different take).  Voiced frames are additive
harmonics under a three-formant envelope; unvoiced ones are spectrally shaped noise from
a generator seeded by (seed, text, frame), so output never depends on thread timing.
"""
from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..config import SamplingConfig, SpecConfig
from ..models import refined_pair
from ..batch import make_decoder
from ..spec.stats import GenerationStats
from ..text import EmptyTextError, normalize_text
from .synth import SegmentStats, SynthesisOptions

__all__ = ["FormantConfig", "FormantSynthesizer"]

# (F1, F2, F3) in Hz, classic averages for an adult voice
_VOWELS = {
    "a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (300, 2250, 3000), "o": (570, 840, 2410),
    "u": (320, 900, 2240), "y": (300, 2100, 2900),
}
_VOICED_CONS = {  # nasals, liquids, glides, voiced stops/fricatives: weaker, lower formants
    "m": (280, 1000, 2200), "n": (280, 1600, 2600), "l": (360, 1300, 2700), "r": (420, 1300, 1600),
    "w": (300, 700, 2200), "v": (300, 1200, 2300), "z": (300, 1600, 2500), "b": (300, 900, 2200),
    "d": (300, 1700, 2600), "g": (300, 1900, 2400), "j": (300, 2000, 2600),
}
_UNVOICED = {  # noise centre frequency and bandwidth
    "s": (3500, 900), "f": (2600, 1800), "h": (1500, 2500), "t": (3000, 1500), "k": (2000, 1500),
    "p": (1200, 1500), "c": (2200, 1500), "x": (2800, 1500), "q": (1800, 1500),
}


@dataclass(frozen=True)
class FormantConfig:
    """Voice and model knobs.  ``pace`` is the minimum wall time per second of audio
    (0 = as fast as the model goes); tests use it to keep generation in flight long
    enough to cancel, benchmarks to mimic a bigger model."""

    sample_rate: int = 8000
    frame_ms: int = 20
    vowel_frames: int = 5
    consonant_frames: int = 3
    space_frames: int = 2
    clause_pause_frames: int = 8
    sentence_pause_frames: int = 14
    lead_in_frames: int = 4  # quiet frames before the first sound (real TTS has them too)
    f0: float = 125.0
    level: float = 0.2
    pace: float = 0.0
    # the tiny LM pair (random weights; a 1-layer early-exit draft of a deeper target)
    vocab_size: int = 256
    hidden_size: int = 96
    num_layers: int = 4
    refine_scale: float = 0.1
    model_seed: int = 7


@dataclass
class _Unit:
    kind: str  # "vowel" | "voiced" | "unvoiced" | "pause" | "lead"
    formants: tuple[int, int, int] = (0, 0, 0)
    noise: tuple[int, int] = (0, 0)


class FormantSynthesizer:
    """The test voice (see module doc).  Thread-safe: per-call state only."""

    supports_speed = True

    def __init__(self, config: FormantConfig | None = None, *, name: str = "test", batch=None) -> None:
        self.config = cfg = config or FormantConfig()
        self.name = name
        self.sample_rate = cfg.sample_rate
        self.frame_samples = cfg.sample_rate * cfg.frame_ms // 1000
        target, draft = refined_pair(
            draft_layers=1,
            refine_scale=cfg.refine_scale,
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            num_heads=4,
            seed=cfg.model_seed,
        )
        self.decoder = make_decoder(target, draft, batch=batch)  # batch: a BatchConfig, or per-session

    # --- planning ---------------------------------------------------------------------
    def plan(self, text: str, speed: float = 1.0) -> list[_Unit]:
        """One unit per 20 ms frame for normalised ``text``."""
        cfg = self.config
        units = [_Unit("lead")] * cfg.lead_in_frames

        def add(unit: _Unit, frames: int) -> None:
            units.extend([unit] * max(1, round(frames / speed)))

        for ch in text.lower():
            if ch in _VOWELS:
                add(_Unit("vowel", _VOWELS[ch]), cfg.vowel_frames)
            elif ch in _VOICED_CONS:
                add(_Unit("voiced", _VOICED_CONS[ch]), cfg.consonant_frames)
            elif ch in _UNVOICED:
                add(_Unit("unvoiced", noise=_UNVOICED[ch]), cfg.consonant_frames)
            elif ch in ",;:":
                add(_Unit("pause"), cfg.clause_pause_frames)
            elif ch in ".!?":
                add(_Unit("pause"), cfg.sentence_pause_frames)
            elif ch.isspace():
                add(_Unit("pause"), cfg.space_frames)
            elif ch.isalnum():  # other letters/digits: a neutral vowel
                add(_Unit("vowel", (500, 1500, 2500)), cfg.vowel_frames)
        return units

    def _prompt(self, text: str) -> list[int]:
        v = self.config.vocab_size
        return [1] + [2 + (ord(c) % (v - 2)) for c in text[:200]]

    # --- synthesis --------------------------------------------------------------------
    def stream(
        self, text: str, options: SynthesisOptions, cancel: threading.Event, stats: SegmentStats
    ) -> Iterator[np.ndarray]:
        stats.text = text
        try:
            norm = normalize_text(text)
        except EmptyTextError:
            stats.finish_reason = "empty"
            return
        units = self.plan(norm, options.speed)
        cfg = SpecConfig(
            rule=options.rule,  # type: ignore[arg-type]
            sampling=SamplingConfig(temperature=options.temperature),
            gamma=options.gamma,
            gamma_max=max(12, options.gamma),
            seed=options.seed,
            max_new_tokens=len(units),
            stop_ids=(-1,),  # never stops early: one token per planned frame
        )
        render = _Renderer(self, units, options.seed, zlib.crc32(norm.encode()))
        gen = GenerationStats()
        t0 = time.perf_counter()
        audio_s = 0.0
        try:
            for chunk in self.decoder.generate(self._prompt(norm), cfg, cancel=cancel, stats=gen):
                if chunk.tokens:
                    pcm = render.frames(chunk.tokens)
                    stats.audio_samples += pcm.size
                    audio_s += pcm.size / self.sample_rate
                    if self.config.pace > 0:  # no faster than `pace` s of wall per s of audio
                        ahead = t0 + audio_s * self.config.pace - time.perf_counter()
                        if ahead > 0 and cancel.wait(ahead):
                            break
                    yield pcm
                if chunk.finish_reason is not None:
                    break
        finally:
            stats.absorb_generation(gen.as_dict())
            if cancel.is_set():
                stats.finish_reason = "cancelled"

    def close(self) -> None:
        self.decoder.close()


class _Renderer:
    """Per-utterance synthesis state: phase, previous envelope (for smooth joins)."""

    def __init__(self, synth: FormantSynthesizer, units: list[_Unit], seed: int, text_hash: int) -> None:
        self.cfg = synth.config
        self.sr = synth.sample_rate
        self.n = synth.frame_samples
        self.units = units
        self.seed = (seed, text_hash)
        self.pos = 0
        self.phase = 0.0
        self.prev_amp = np.zeros(0)
        self.prev_f0 = self.cfg.f0
        self.prev_gain = 0.0

    def frames(self, tokens: list[int]) -> np.ndarray:
        out = []
        for tok in tokens:
            unit = self.units[min(self.pos, len(self.units) - 1)]
            out.append(self._frame(unit, int(tok)))
            self.pos += 1
        return np.concatenate(out).astype(np.float32)

    def _frame(self, unit: _Unit, tok: int) -> np.ndarray:
        cfg, n, sr = self.cfg, self.n, self.sr
        t = np.arange(n)
        progress = self.pos / max(1, len(self.units))
        # declining intonation + a token-dependent wobble: the audio depends on the decode
        f0 = cfg.f0 * (1.08 - 0.16 * progress) * (1.0 + 0.04 * (((tok % 9) - 4) / 4.0))
        gain_target = cfg.level * (0.85 + 0.15 * ((tok >> 3) % 4) / 3.0)
        if unit.kind in ("lead", "pause"):
            gain_target = 0.0
        elif unit.kind == "voiced":
            gain_target *= 0.5
        ramp = np.linspace(self.prev_gain, gain_target if unit.kind != "unvoiced" else 0.0, n, endpoint=False)
        f0s = np.linspace(self.prev_f0, f0, n, endpoint=False)
        phases = self.phase + 2 * np.pi * np.cumsum(f0s) / sr
        self.phase = float(phases[-1] % (2 * np.pi))
        self.prev_f0 = f0
        voiced = np.zeros(n)
        if unit.kind in ("vowel", "voiced") or self.prev_gain > 0:
            k = np.arange(1, int((sr / 2 - 200) / f0) + 1)
            fm = unit.formants if unit.kind in ("vowel", "voiced") else (500, 1500, 2500)
            amp = _envelope(k * f0, fm) / k  # -6 dB/octave source tilt
            amp /= max(np.sqrt(np.sum(amp**2) / 2), 1e-9)  # unit RMS before gain
            voiced = np.sum(amp[:, None] * np.sin(k[:, None] * phases[None, :]), axis=0)
        out = ramp * voiced
        self.prev_gain = gain_target if unit.kind != "unvoiced" else 0.0
        if unit.kind == "unvoiced":
            rng = np.random.default_rng([self.seed[0] & 0xFFFFFFFF, self.seed[1], self.pos])
            spec = np.fft.rfft(rng.standard_normal(n))
            freqs = np.fft.rfftfreq(n, 1 / sr)
            centre, width = unit.noise
            spec *= np.exp(-0.5 * ((freqs - centre) / (width / 2)) ** 2)
            noise = np.fft.irfft(spec, n)
            noise /= max(np.sqrt(np.mean(noise**2)), 1e-9)
            window = np.minimum(1.0, np.minimum(t + 1, n - t) / 24.0)  # no clicks at frame edges
            out = out + 0.25 * cfg.level * noise * window
        if unit.kind == "lead":  # near-silent breath: below the audibility threshold
            rng = np.random.default_rng([self.seed[0] & 0xFFFFFFFF, self.seed[1], self.pos, 1])
            out = out + 0.002 * rng.standard_normal(n)
        return out


def _envelope(freqs: np.ndarray, formants: tuple[int, int, int]) -> np.ndarray:
    """Sum of three resonance peaks (bandwidths 80/100/120 Hz), falling with formant order."""
    env = np.zeros_like(freqs, dtype=np.float64)
    for i, (fc, bw) in enumerate(zip(formants, (80.0, 100.0, 120.0))):
        env += (0.6**i) / np.sqrt(1.0 + ((freqs - fc) / (bw / 2)) ** 2)
    return env


def default_test_synthesizer(**overrides) -> FormantSynthesizer:
    """The test voice with ``FormantConfig`` overrides (threads: torch's own setting)."""
    return FormantSynthesizer(FormantConfig(**overrides))
