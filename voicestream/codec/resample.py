"""Band-limited rational resampling in numpy (no torchaudio/scipy needed).

Why: teacher audio arrives at 22.05/16 kHz while Codec2 runs at 8 kHz, and
ASR/DNSMOS want 16 kHz.  A Kaiser-windowed sinc evaluated on a polyphase grid
gives accurate, alias-free conversion for any integer rate pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import gcd

import numpy as np

__all__ = ["ResamplerConfig", "resample"]


@dataclass(frozen=True)
class ResamplerConfig:
    """Filter design knobs; defaults give > 80 dB stopband and < 1e-3 passband error."""

    zero_crossings: int = 24  # sinc lobes on each side: longer = sharper transition
    rolloff: float = 0.94  # cutoff as a fraction of the lower Nyquist frequency
    kaiser_beta: float = 9.0  # window shape: higher = more stopband attenuation
    chunk: int = 65536  # output samples computed per vectorised block (bounds memory)


@lru_cache(maxsize=32)
def _filter_bank(up: int, down: int, cfg: ResamplerConfig) -> tuple[np.ndarray, int]:
    """Polyphase table ``(up, taps)`` and the tap offset of column 0."""
    fc = 0.5 * cfg.rolloff * min(1.0, up / down)  # cycles per input sample
    half_width = cfg.zero_crossings / (2.0 * fc)  # in input samples
    k0 = int(np.ceil(half_width))
    ks = np.arange(-k0, k0 + 2, dtype=np.float64)  # +1 covers the fractional shift
    frac = np.arange(up, dtype=np.float64)[:, None] / up
    t = ks[None, :] - frac  # input position minus output position
    inside = np.abs(t) <= half_width
    arg = np.clip(1.0 - (t / half_width) ** 2, 0.0, 1.0)
    window = np.i0(cfg.kaiser_beta * np.sqrt(arg)) / np.i0(cfg.kaiser_beta)
    h = 2.0 * fc * np.sinc(2.0 * fc * t) * window * inside
    return h, -k0


def resample(
    audio: np.ndarray,
    orig_sr: int,
    target_sr: int,
    config: ResamplerConfig | None = None,
) -> np.ndarray:
    """Resample mono ``audio`` from ``orig_sr`` to ``target_sr`` (float32 out).

    Output length is ``ceil(len * target_sr / orig_sr)``; sample ``n`` is the
    band-limited signal at time ``n / target_sr`` (no added delay).
    """
    cfg = config or ResamplerConfig()
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError("sample rates must be positive")
    if orig_sr == target_sr or x.size == 0:
        return x.astype(np.float32)
    g = gcd(int(orig_sr), int(target_sr))
    up, down = target_sr // g, orig_sr // g
    bank, first = _filter_bank(up, down, cfg)
    taps = bank.shape[1]
    n_out = -(-x.size * up // down)
    pad_left = -first
    xp = np.concatenate([np.zeros(pad_left), x, np.zeros(taps + 1)])
    out = np.empty(n_out, dtype=np.float64)
    cols = np.arange(taps)
    for start in range(0, n_out, cfg.chunk):
        n = np.arange(start, min(n_out, start + cfg.chunk), dtype=np.int64)
        pos = n * down
        base, phase = pos // up, pos % up
        idx = (base + first + pad_left)[:, None] + cols[None, :]
        out[start : start + n.size] = np.einsum("ij,ij->i", bank[phase], xp[idx])
    return out.astype(np.float32)
