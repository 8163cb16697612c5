"""Counter-based randomness: every draw is keyed by (seed, purpose, position, epoch).

In pipelined mode the draft speculates ahead by an amount that depends on timing, so a
single sequential RNG stream would make sampled output depend on thread scheduling.
Keying each draw by the absolute sequence position and the rejection epoch makes a
seeded generation reproducible in every mode, while different keys stay independent.
"""
from __future__ import annotations

import random

import torch

DRAFT, ACCEPT, RESAMPLE = 1, 2, 3

_M64 = (1 << 64) - 1


def _mix(*parts: int) -> int:
    """splitmix64-style hash of a tuple of ints (stable across processes)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (p & _M64)) * 0xBF58476D1CE4E5B9) & _M64
        h ^= h >> 29
        h = (h * 0x94D049BB133111EB) & _M64
        h ^= h >> 32
    return h


class Randomness:
    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def uniform(self, purpose: int, position: int, epoch: int) -> float:
        return random.Random(_mix(self.seed, purpose, position, epoch)).random()

    def sample(self, probs: torch.Tensor, purpose: int, position: int, epoch: int) -> int:
        """Inverse-CDF draw from a (V,) probability row (need not be normalised)."""
        cdf = probs.double().cumsum(-1)
        x = self.uniform(purpose, position, epoch) * float(cdf[-1])
        idx = int(torch.searchsorted(cdf, torch.tensor([x], dtype=cdf.dtype, device=cdf.device), right=True))
        return min(idx, probs.shape[-1] - 1)
