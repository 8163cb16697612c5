"""Test speech for codec tests: real clips when codec2-examples is installed,
otherwise a synthetic vowel/fricative signal that needs no package."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLIP_DIR = Path("/usr/share/codec2/raw")
CLIPS = ("hts1a.raw", "hts2a.raw", "morig.raw")


def synthetic_speech(seconds: float = 2.0, sr: int = 8000, seed: int = 0) -> np.ndarray:
    """Voiced segments (pulse train through three formant resonators, gliding
    pitch) alternating with noise bursts, so voicing, pitch and energy all vary."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 110 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = np.cumsum(f0 / sr)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    x = pulses.copy()
    for fc, bw in ((700, 80), (1200, 100), (2600, 150)):
        r = np.exp(-np.pi * bw / sr)
        a1, a2 = -2 * r * np.cos(2 * np.pi * fc / sr), r * r
        y = np.zeros(n)
        for i in range(n):
            y[i] = x[i] - a1 * (y[i - 1] if i else 0.0) - a2 * (y[i - 2] if i > 1 else 0.0)
        x = y
    x /= np.abs(x).max()
    unvoiced = (np.sin(2 * np.pi * 1.5 * t) > 0.6)
    x = np.where(unvoiced, 0.3 * rng.standard_normal(n), x)
    envelope = 0.02 + (0.5 - 0.5 * np.cos(2 * np.pi * 3.0 * t)) ** 2  # syllables with near-pauses
    return (0.5 * x * envelope).astype(np.float32)


def load_speech(max_clips: int = 2) -> list[np.ndarray]:
    """Float32 8 kHz mono clips."""
    clips = [
        np.fromfile(CLIP_DIR / name, dtype=np.int16).astype(np.float32) / 32768.0
        for name in CLIPS
        if (CLIP_DIR / name).is_file()
    ]
    return clips[:max_clips] or [synthetic_speech()]
