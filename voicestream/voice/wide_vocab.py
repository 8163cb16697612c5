"""A wide vocabulary for the corpus sentence generator, derived from a plain word list.

Why: the template generator's hand-written lists hold ~400 content words, so a voice
trained on its corpus hears few of the phone sequences open-vocabulary text needs.  A word
list has no parts of speech, but English morphology recovers enough of them for template
slots: a word whose ``-ed``, ``-ing`` and ``-s`` forms are all listed is a regular verb;
one with an ``-ly`` adverb is an adjective; one with a plural and none of those is a noun.
The sentences come out odd ("The cogent thicket ..."), which is fine for a teacher corpus:
what the voice needs from them is phonetic variety, not sense.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = ["WideVocab"]

_WORD = re.compile(r"[a-z]+")


def _read_words(path: Path) -> set[str]:
    """Lower-case alphabetic words of a list (one per line) or a ``word<TAB>...`` table."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        firsts = (line.split("\t", 1)[0].strip() for line in f)
        return {w for w in firsts if _WORD.fullmatch(w)}


@dataclass(frozen=True)
class WideVocab:
    """Template slot fillers by part of speech (sorted: the generator's RNG indexes them)."""

    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    adverbs: tuple[str, ...]
    verbs_base: tuple[str, ...]
    verbs_past: tuple[str, ...]  # verbs_past[i] is the past tense of verbs_base[i]

    @classmethod
    def from_words(cls, words: set[str]) -> WideVocab:
        w = words

        def past(v: str) -> str | None:
            for cand in (v + "d" if v.endswith("e") else None, v + "ed",
                         v[:-1] + "ied" if v.endswith("y") else None, v + v[-1] + "ed"):
                if cand and cand in w:
                    return cand
            return None

        def has_ing(v: str) -> bool:
            return v + "ing" in w or (v.endswith("e") and v[:-1] + "ing" in w) or v + v[-1] + "ing" in w

        def has_s(v: str) -> bool:
            return v + "s" in w or v + "es" in w or (v.endswith("y") and v[:-1] + "ies" in w)

        verbs = {v: p for v in w if 3 <= len(v) <= 10 and (p := past(v)) and has_ing(v) and has_s(v)}
        adverb_of: dict[str, str] = {}
        for a in w:
            if len(a) < 4 or a.endswith("ly"):
                continue
            for cand in (a + "ly", a[:-1] + "ily" if a.endswith("y") else "",
                         a[:-1] + "y" if a.endswith("le") else "", a + "ally" if a.endswith("ic") else ""):
                if cand in w:
                    adverb_of[a] = cand
                    break

        def inflected(n: str) -> bool:  # a plural, past or participle of a listed word
            return ((n.endswith("s") and n[:-1] in w) or (n.endswith("es") and n[:-2] in w)
                    or n.endswith(("ly", "ing", "ed")))

        nouns = {n for n in w if 3 <= len(n) <= 11 and has_s(n) and n not in verbs and n not in adverb_of
                 and not inflected(n)}
        base = sorted(verbs)
        return cls(
            nouns=tuple(sorted(nouns)),
            adjectives=tuple(sorted(adverb_of)),
            adverbs=tuple(sorted(set(adverb_of.values()))),
            verbs_base=tuple(base),
            verbs_past=tuple(verbs[v] for v in base),
        )

    def digest(self) -> str:
        """sha256 of the tables: what a corpus depends on, whatever file or path they came from."""
        h = hashlib.sha256()
        for f in fields(self):
            h.update(("\n".join(getattr(self, f.name)) + "\x00").encode())
        return h.hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> WideVocab:
        """From a word list, e.g. ``/usr/share/dict/american-english`` or a voice's ``words.tsv.gz``."""
        words = _read_words(Path(path))
        if not words:
            raise ValueError(f"{path}: no lower-case words in it")
        return cls.from_words(words)
