"""Word errors of an ASR transcript against the text a voice was asked to say.

Both sides go through the TTS front end's normaliser (so "$5" == "five dollars").  One
asymmetry is Whisper's: it writes spoken numbers as digits, grouped as it likes -- "4.512"
or "4-5-1-2" for *four five one two*, "730" or "7.30" for *seven thirty*, "873" for *eight seven
three* -- and a plain normaliser reads those back as "four point five one two" or "seven
hundred thirty", counting words the voice said right as errors (the teacher pays them too).
:func:`transcript_errors` therefore reads each digit group of the transcript every way a
speaker could have said it (as written, digit by digit, as hours and minutes) and scores
the reading closest to the reference.  Ordinals ("6th") are left as written: "sixth" is a
different word from "six".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .normalize import NormalizerConfig, normalize_text

__all__ = ["edit_distance", "transcript_errors", "wer_words", "word_errors"]

_DIGIT_GROUP = re.compile(r"^(?P<lead>[\"'(]*)(?P<num>\d+(?:[.,\-]\d+)*)(?P<tail>[.,?!;:\"')]*)$")
_WORDS_CFG = NormalizerConfig(keep_punctuation=False)


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (substitutions + deletions + insertions) between two sequences:
    of words here, of phoneme characters in the corpus aligner."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Word-level edit distance of a transcript's words from the reference's."""
    return edit_distance(ref, hyp)


def wer_words(text: str) -> list[str]:
    """Normalise like the TTS front end, without punctuation."""
    try:
        return normalize_text(text, _WORDS_CFG).split()
    except ValueError:
        return []


def number_readings(token: str) -> list[str]:
    """Ways to say a transcript token that is a digit group: as written first, then digit
    by digit and (3-4 plain digits, or a clock time "7.30") as hours and minutes / two pairs
    ("730" -> "7 30", "1205" -> "12 oh 5")."""
    m = _DIGIT_GROUP.match(token)
    if m is None:
        return [token]
    lead, num, tail = m["lead"], m["num"], m["tail"]
    digits = re.sub(r"\D", "", num)
    readings = [token]
    if len(digits) >= 2:
        readings.append(lead + " ".join(digits) + tail)
    clock = re.fullmatch(r"(\d{1,2})\.(\d\d)", num)  # "7.30": Whisper's clock time
    if clock or (num.isdigit() and len(num) in (3, 4)):
        hours, mins = (clock[1], clock[2]) if clock else (num[:-2], num[-2:])
        if mins != "00":
            minutes = mins if mins[0] != "0" else "oh " + mins[1]  # "1205": twelve oh five
            readings.append(f"{lead}{hours} {minutes}{tail}")
    return readings


def transcript_errors(ref_text: str, hyp_text: str) -> tuple[int, int]:
    """(word errors, reference words) of a transcript, each digit group read the way closest
    to the reference (one greedy pass, left to right: groups rarely interact)."""
    ref = wer_words(ref_text)
    tokens = hyp_text.split()
    best = word_errors(ref, wer_words(" ".join(tokens)))
    for i, tok in enumerate(tokens):
        for alt in number_readings(tok)[1:]:
            trial = tokens[:i] + [alt] + tokens[i + 1 :]
            e = word_errors(ref, wer_words(" ".join(trial)))
            if e < best:
                best, tokens = e, trial
    return best, len(ref)
