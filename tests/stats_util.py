"""Goodness-of-fit helpers for the sampling tests (no scipy needed)."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np


def chi_square(counts: Counter, probs: dict, n: int) -> tuple[float, int]:
    """Pearson chi-square of observed counts against expected probabilities.

    Cells with small expectation are pooled so the statistic's chi-square law holds.
    Returns (statistic, degrees of freedom).
    """
    cells = sorted(probs, key=lambda c: probs[c])
    stat, dof, pool_obs, pool_exp = 0.0, -1, 0.0, 0.0
    for c in cells:
        pool_obs += counts.get(c, 0)
        pool_exp += probs[c] * n
        if pool_exp >= 5:
            stat += (pool_obs - pool_exp) ** 2 / pool_exp
            dof += 1
            pool_obs = pool_exp = 0.0
    if pool_exp > 0:
        stat += (pool_obs - pool_exp) ** 2 / max(pool_exp, 1e-9)
        dof += 1
    stray = sum(v for k, v in counts.items() if k not in probs)  # outcomes with zero probability
    if stray:
        stat = math.inf
    return stat, max(dof, 1)


def chi_square_critical(dof: int, alpha: float = 1e-3) -> float:
    """Upper critical value via the Wilson-Hilferty approximation."""
    z = {1e-2: 2.3263, 1e-3: 3.0902, 1e-4: 3.7190}[alpha]
    h = 2.0 / (9.0 * dof)
    return dof * (1 - h + z * math.sqrt(h)) ** 3


def total_variation(counts: Counter, probs: dict, n: int) -> float:
    keys = set(counts) | set(probs)
    return 0.5 * sum(abs(counts.get(k, 0) / n - probs.get(k, 0.0)) for k in keys)


def random_distribution(rng: np.random.Generator, v: int, sharp: float = 1.0) -> np.ndarray:
    x = np.exp(sharp * rng.normal(size=v))
    return x / x.sum()
