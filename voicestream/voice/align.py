"""Text words <-> Piper (espeak) phoneme word groups, and group durations -> frames.

Why: the interleaved ("words") layout needs to know which codec frames belong to which
piece of text.  Piper exposes per-phoneme sample counts, but espeak's word groups do
not match text words one to one: it merges function words ("of the" -> ``ʌvðə``) and
can split others.  We align the two sequences with a small dynamic programme whose
steps join 1-3 text words to 1-3 phoneme groups, scoring each join by the edit distance
between the espeak phonemes of the text words spoken alone and the group's phonemes.
The result is a list of *units*: text pieces with a frame count each.

Pure Python, no Piper import: the builder passes phoneme strings in, tests pass their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..text.wer import edit_distance

__all__ = ["PhonemeGroup", "Unit", "align_units", "edit_distance", "groups_from_alignment", "units_to_frames"]

# Marks that change little between a word spoken alone and inside a phrase.
_IGNORED = set("ˈˌːˑ-")
PUNCTUATION = set(",.?!;:\"'()")


@dataclass(frozen=True)
class PhonemeGroup:
    """One espeak word group: its phonemes (no punctuation) and audio samples."""

    phonemes: str
    samples: int


@dataclass(frozen=True)
class Unit:
    """A text piece (one or more words joined by spaces) and its frame count."""

    text: str
    frames: int


def _clean(ph: str) -> str:
    return "".join(c for c in ph if c not in _IGNORED and c not in PUNCTUATION and not c.isspace())


def groups_from_alignment(alignments: Sequence[tuple[str, int]]) -> list[PhonemeGroup]:
    """Per-phoneme ``(phoneme, samples)`` of one or more Piper sentences -> word groups.

    A group ends at each space phoneme and at each sentence end (``$``); the space's
    samples (the inter-word gap, which holds the pause after punctuation) go to the
    group before it, ``^`` (leading silence) to the group after it.
    """
    groups: list[PhonemeGroup] = []
    ph: list[str] = []
    samples = 0
    for p, n in alignments:
        samples += int(n)
        if p == "^":
            continue
        if p in (" ", "$"):
            if ph or p == "$":
                if ph:
                    groups.append(PhonemeGroup("".join(ph), samples))
                elif groups:  # sentence end right after a space: give its samples back
                    groups[-1] = PhonemeGroup(groups[-1].phonemes, groups[-1].samples + samples)
                else:
                    continue  # nothing spoken yet: keep accumulating
                ph, samples = [], 0
            continue
        ph.append(p)
    if ph:
        groups.append(PhonemeGroup("".join(ph), samples))
    elif samples and groups:
        groups[-1] = PhonemeGroup(groups[-1].phonemes, groups[-1].samples + samples)
    return groups


def align_units(
    words: Sequence[str],
    groups: Sequence[PhonemeGroup],
    phonemize_word: Callable[[str], str],
    *,
    max_join: int = 3,
) -> list[tuple[str, int]] | None:
    """Join text ``words`` and phoneme ``groups`` into units ``(text, samples)``.

    Returns ``None`` when no alignment exists (e.g. one side is empty).  ``phonemize_word``
    gives espeak phonemes for a single word (punctuation already stripped).
    """
    W, G = len(words), len(groups)
    if W == 0 or G == 0:
        return None
    word_ph = [_clean(phonemize_word("".join(c for c in w if c not in PUNCTUATION))) for w in words]
    group_ph = [_clean(g.phonemes) for g in groups]
    inf = float("inf")
    cost = [[inf] * (G + 1) for _ in range(W + 1)]
    back: list[list[tuple[int, int] | None]] = [[None] * (G + 1) for _ in range(W + 1)]
    cost[0][0] = 0.0
    steps = [(a, 1) for a in range(1, max_join + 1)] + [(1, b) for b in range(2, max_join + 1)]
    for i in range(W + 1):
        for j in range(G + 1):
            c0 = cost[i][j]
            if c0 == inf:
                continue
            for a, b in steps:
                if i + a > W or j + b > G:
                    continue
                x, y = "".join(word_ph[i : i + a]), "".join(group_ph[j : j + b])
                # normalised distance, plus a small price per join so 1:1 wins ties
                c = c0 + edit_distance(x, y) / max(len(x), len(y), 1) + 0.05 * (a + b - 2)
                if c < cost[i + a][j + b]:
                    cost[i + a][j + b] = c
                    back[i + a][j + b] = (a, b)
    if cost[W][G] == inf:
        return None
    units: list[tuple[str, int]] = []
    i, j = W, G
    while i or j:
        step = back[i][j]
        assert step is not None
        a, b = step
        units.append((" ".join(words[i - a : i]), sum(g.samples for g in groups[j - b : j])))
        i, j = i - a, j - b
    return units[::-1]


def units_to_frames(unit_samples: Sequence[int], sample_rate: int, frame_rate: float, total_frames: int) -> list[int]:
    """Unit sample counts (at ``sample_rate``) -> frame counts (each >= 1) summing to ``total_frames``.

    Boundaries are rounded to the nearest frame, then nudged so every unit keeps at least
    one frame; raises ``ValueError`` if there are more units than frames.
    """
    n = len(unit_samples)
    if n > total_frames:
        raise ValueError(f"{n} units cannot fit in {total_frames} frames")
    bounds, acc = [], 0
    for s in unit_samples[:-1]:
        acc += int(s)
        bounds.append(round(acc / sample_rate * frame_rate))
    # strictly increasing, unit i ends at >= i + 1 and leaves room for the rest
    fixed, prev = [], 0
    for i, b in enumerate(bounds):
        b = max(b, prev + 1)
        b = min(b, total_frames - (n - 1 - i))
        fixed.append(b)
        prev = b
    edges = [0, *fixed, total_frames]
    return [edges[i + 1] - edges[i] for i in range(n)]
