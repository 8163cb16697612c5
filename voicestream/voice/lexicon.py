"""A pronunciation lexicon for the phones layout: unit text -> the phone lists heard for it.

Why: measured on held-out sentences, most of the built-in voice's word errors came from
its plan, not its sound -- with the teacher's phone lists forced (durations still the
LM's) word error rate fell from 36 % to 26 %, with the teacher's durations too to 20 %
(the teacher's own codec tokens: 16 %).  A 10M-parameter LM's grapheme-to-phoneme step
is the weak part, and every production TTS front end answers that the same way: a
lexicon for the words it knows, the learned G2P for the rest.

The lexicon is data harvested from the training corpus (the teacher's phone alignment
per unit, see :func:`~voicestream.voice.phones.unit_phones`), so nothing GPL runs at
synthesis; its unit edges are first moved to where the word table says the sounds belong
(:func:`realign_units`: the aligner's edges drift at unstressed words).  Each unit text
keeps the variants it was spoken with, tagged by where the
unit sat in its sentence (espeak adds clause marks at the edges); at synthesis
:class:`~voicestream.voice.masking.TextFollowing` lets the LM choose only among them,
and choose its durations freely.  A unit text the lexicon lacks falls back to the LM.

Open vocabulary: the corpus only holds the words its few thousand sentences used, so a
second table, ``words.tsv.gz``, holds each word of a large word list (e.g. Debian's
``/usr/share/dict/american-english``) as the teacher pronounces it alone.  A unit the
corpus never heard (or never heard at this place in a sentence) is composed from it: the
sentence-start mark, the word's phones, its trailing punctuation, then the word gap or
the sentence-end mark -- on the corpus's own single words this reproduces the harvested
form ~95 % of the time (the misses are stress marks and function words, which the corpus
holds anyway).  The table is data written once at build time by the teacher's phonemizer
(dev extra), like the corpus itself.

Stored as ``lexicon.json`` (and ``words.tsv.gz``) beside the target's weights; built by
``python -m voicestream.voice.lexicon --corpus DIR --target DIR [--words FILE]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["AUTO_PLAN", "FILENAME", "PLANS", "WORDS_FILENAME", "Lexicon", "position", "resolve_plan", "word_table"]

FILENAME = "lexicon.json"
WORDS_FILENAME = "words.tsv.gz"  # beside FILENAME: word -> its phones spoken alone
#: Punctuation the normaliser keeps at a word's end; the teacher speaks it as the same symbol.
TRAILING = ",.?!;:"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
#: Who writes a phones voice's plan: the LM alone; the lexicon's phones (the LM's durations);
#: the lexicon's phones and median durations. The LM writes whatever the lexicon lacks.
PLANS = ("model", "lexicon", "lexicon-durations")
AUTO_PLAN = "lexicon"  # what "auto" picks when a lexicon ships beside the target (measured best)


def position(first: bool, last: bool) -> str:
    """Where a unit sits in its sentence (espeak marks clause edges with extra phones)."""
    return "only" if first and last else "first" if first else "last" if last else "mid"


@dataclass
class Lexicon:
    """``entries[text][position]``: phone-symbol variants of a unit, most frequent first;
    ``frames[text][position]``, when built with durations: each variant's median frames per phone."""

    entries: dict[str, dict[str, list[tuple[str, ...]]]] = field(default_factory=dict)
    frames: dict[str, dict[str, list[tuple[int, ...]]]] = field(default_factory=dict)
    words: dict[str, str] = field(default_factory=dict)  # bare word -> phones spoken alone, a symbol a char

    def __post_init__(self) -> None:
        # word-boundary prefixes of multi-word keys ("of" for "of the"): a unit may not end there
        # unless it is a key itself
        self._prefixes = {" ".join(k.split(" ")[:i]) for k in self.entries for i in range(1, k.count(" ") + 1)}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, text: str) -> bool:
        return text in self.entries or self.compose(text, False, False) is not None

    def compose(self, text: str, first: bool, last: bool) -> tuple[str, ...] | None:
        """A one-word unit's phone list from the word table, laid out as the corpus lays
        units out (``^`` opening a sentence, the trailing punctuation, then the gap or
        ``$``); None when ``text`` is not one known word with optional punctuation."""
        core = text.rstrip(TRAILING)
        phones = self.words.get(core)
        if not phones:
            return None
        return (*(("^",) if first else ()), *phones, *text[len(core):], "$" if last else " ")

    def extends(self, text: str) -> bool:
        """Some key is ``text`` followed by more words."""
        return text in self._prefixes

    def variants(self, text: str, first: bool, last: bool) -> list[tuple[str, ...]]:
        """The phone lists for ``text`` at this place in a sentence (any place when it was
        never heard there); empty when the text is not in the lexicon."""
        return [v for v, _ in self.timed_variants(text, first, last)]

    def timed_variants(self, text: str, first: bool, last: bool) -> list[tuple[tuple[str, ...], tuple[int, ...] | None]]:
        """:meth:`variants` with each one's median frames per phone (None without durations)."""
        by_pos = self.entries.get(text) or {}
        pos = position(first, last)
        if not by_pos.get(pos):  # never heard here: the word table's form for this place, if any
            composed = self.compose(text, first, last)
            if composed is not None:
                return [(composed, None)]
        if not by_pos:
            return []
        frames = self.frames.get(text, {})
        places = [pos] if by_pos.get(pos) else sorted(by_pos)
        out: dict[tuple[str, ...], tuple[int, ...] | None] = {}
        for p in places:
            fs = frames.get(p) or [None] * len(by_pos[p])
            for v, f in zip(by_pos[p], fs):
                out.setdefault(v, f)
        return list(out.items())

    @classmethod
    def build(cls, units: Iterable[tuple], *, min_share: float = 0.1) -> Lexicon:
        """From sentences given as ``(unit texts, per-unit phone symbols)`` or
        ``(unit texts, per-unit phone symbols, per-unit frames per phone)``.

        Variants heard less than ``min_share`` of the time for their text and position are
        dropped (alignment noise); the rest are kept most frequent first.  With durations,
        each variant keeps the per-phone median over its occurrences."""
        counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        timings: dict[tuple[str, str, tuple[str, ...]], list[Sequence[int]]] = defaultdict(list)
        timed = None
        for sentence in units:
            texts, phones = sentence[0], sentence[1]
            durations = sentence[2] if len(sentence) > 2 else None
            if timed is None:
                timed = durations is not None
            if len(texts) != len(phones) or (durations is not None and len(durations) != len(texts)):
                raise ValueError("one phone list per unit")
            n = len(texts)
            for i, (text, ph) in enumerate(zip(texts, phones)):
                if ph:
                    key = (text, position(i == 0, i == n - 1), tuple(ph))
                    counts[key[0]][key[1]][key[2]] += 1
                    if durations is not None:
                        if len(durations[i]) != len(ph):
                            raise ValueError("one duration per phone")
                        timings[key].append(durations[i])
        entries: dict[str, dict[str, list[tuple[str, ...]]]] = {}
        frames: dict[str, dict[str, list[tuple[int, ...]]]] = {}
        for text, by_pos in counts.items():
            entries[text] = {}
            for pos, c in by_pos.items():
                total = sum(c.values())
                entries[text][pos] = [v for v, k in c.most_common() if k >= min_share * total]
                if timed:
                    frames.setdefault(text, {})[pos] = [
                        tuple(int(x) for x in np.round(np.median(np.asarray(timings[(text, pos, v)]), axis=0)))
                        for v in entries[text][pos]
                    ]
        return cls(entries, frames)

    def save(self, path: str | Path) -> None:
        def row(t: str, p: str, i: int, v: tuple[str, ...]) -> list:
            f = self.frames.get(t, {}).get(p)
            return [list(v), list(f[i])] if f else [list(v)]

        data = {t: {p: [row(t, p, i, v) for i, v in enumerate(vs)] for p, vs in sorted(by.items())}
                for t, by in sorted(self.entries.items())}
        lines = ",\n".join(f"{json.dumps(t, ensure_ascii=False)}: {json.dumps(by, ensure_ascii=False)}"
                           for t, by in data.items())  # one unit a line: readable, diffable
        Path(path).write_text(f'{{"format": 1, "entries": {{\n{lines}\n}}}}\n')
        if self.words:  # (without a table, one already beside ``path`` is left as it is)
            rows = "".join(f"{w}\t{p}\n" for w, p in sorted(self.words.items()))
            # mtime 0: the same table gives the same bytes (no spurious diffs of shipped data)
            with gzip.GzipFile(Path(path).with_name(WORDS_FILENAME), "wb", mtime=0) as f:
                f.write(rows.encode())

    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        raw = json.loads(Path(path).read_text())
        if raw.get("format") != 1:
            raise ValueError(f"{path}: unknown lexicon format {raw.get('format')!r}")
        entries = {t: {p: [tuple(v[0]) for v in vs] for p, vs in by.items()} for t, by in raw["entries"].items()}
        frames = {t: {p: [tuple(v[1]) for v in vs] for p, vs in by.items() if vs and all(len(v) > 1 for v in vs)}
                  for t, by in raw["entries"].items()}
        return cls(entries, {t: by for t, by in frames.items() if by}, load_words(Path(path).with_name(WORDS_FILENAME)))

    @classmethod
    def find(cls, target_dir: str | Path) -> Lexicon | None:
        """The lexicon shipped beside a target's weights, or None."""
        path = Path(target_dir) / FILENAME
        return cls.load(path) if path.is_file() else None


def load_words(path: str | Path) -> dict[str, str]:
    """A word table (``word<TAB>phones`` a line, gzip) as a dict; empty when there is none."""
    if not Path(path).is_file():
        return {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)


def resolve_plan(plan: str, target_dir: str | Path) -> tuple[Lexicon | None, bool]:
    """``(lexicon, lexicon_durations)`` for a plan (:data:`PLANS`, or ``auto``: :data:`AUTO_PLAN`
    when the target ships a lexicon, else the LM's own plan)."""
    if plan not in ("auto", *PLANS):
        raise ValueError(f"plan must be auto or one of {PLANS}, got {plan!r}")
    if plan == "model":
        return None, False
    lexicon = Lexicon.find(target_dir)
    if lexicon is None:
        if plan == "auto":
            return None, False
        raise FileNotFoundError(f"plan {plan!r} needs {Path(target_dir) / FILENAME} "
                                "(python -m voicestream.voice.lexicon builds it)")
    return lexicon, (AUTO_PLAN if plan == "auto" else plan) == "lexicon-durations"


def add_plan_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", choices=["auto", *PLANS], default="auto",
                   help="who writes a phones voice's phone list and durations: the LM (model), the pronunciation "
                        "lexicon shipped beside the target (lexicon: its phones; lexicon-durations: its phones and "
                        f"median durations), the LM for words it lacks. auto: {AUTO_PLAN} when the target ships "
                        f"{FILENAME}, else model")


def corpus_units(utterances, frame_rate: float = 50.0):
    """``(unit texts, per-unit phone symbols, per-unit frames per phone)`` for each corpus
    utterance with a phone alignment."""
    from .phones import phone_durations, utterance_phones

    for u in utterances:
        phones = utterance_phones(u, frame_rate)
        if phones is None:
            continue
        yield (list(u.units), [[p for p, _ in run] for run in phones],
               [phone_durations(run, n) for run, n in zip(phones, u.unit_frames)])


_MARKS = frozenset("ˈˌʲ ")  # stress, the linking glide and the gap inside a unit: not compared as sounds
_EDGE = frozenset(TRAILING + " $")  # what closes a unit: its punctuation, then the gap or the sentence end


def _sounds(symbols: Iterable[str]) -> list[str]:
    return [s for s in symbols if s not in _MARKS]


def _split(ph: Sequence[str]) -> tuple[int, int]:
    """``(start, end)`` of a unit's body: after its ``^``, before its closing punctuation and gap."""
    a, b = 0, len(ph)
    while a < b and ph[a] == "^":
        a += 1
    while b > a and ph[b - 1] in _EDGE:
        b -= 1
    return a, b


def _cut(body: list, n: int, from_end: bool) -> tuple[list, list] | None:
    """``(rest, moved)``: the last (or first) ``n`` sounds of ``body`` with the marks among
    them, without the gaps at the cut; None when that would leave no sound behind."""
    idx = [i for i, (s, _) in enumerate(body) if s not in _MARKS]
    if n >= len(idx):
        return None
    k = len(idx) - n if from_end else n  # the first sound of the later part
    i = idx[k]
    while i > idx[k - 1] + 1 and body[i - 1][0] != " ":  # its stress mark goes with it
        i -= 1
    rest, moved = (body[:i], body[i:]) if from_end else (body[i:], body[:i])
    strip = lambda xs: [x for j, x in enumerate(xs) if not (x[0] == " " and (j == 0 or j == len(xs) - 1))]  # noqa: E731
    return strip(rest), strip(moved)


def realign_units(texts: Sequence[str], phones: Sequence[Sequence[str]], durations: Sequence[Sequence[int]],
                  words: dict[str, str], *, reach: int = 6) -> tuple[list[list[str]], list[list[int]]]:
    """Move sounds across unit edges where the teacher's timing put them in a neighbour.

    Why: a unit's phones are the ones *starting* inside its frames, and the frames are cut
    from a text alignment that drifts by a sound or two at unstressed words -- "booked" got
    ``bʊktɐ`` and "a table" ``teɪbəl``, "deferred the" lost its ``ðɪʲ`` to "unquestionable",
    and a lone "a" was harvested as ``eɪt ɐ``.  A lexicon built from those plans
    "booktable" and "eight a".  At each edge between units whose words are all in the word
    table (their citation forms, ``words``), up to ``reach`` sounds move to whichever side
    brings both units closer to those forms; the sounds themselves stay the teacher's
    (its reduced ``ɐ``, ``ðɪʲ``), with their durations.
    """
    from ..text.wer import edit_distance

    def ref(text: str) -> list[str] | None:
        forms = [words.get(w.rstrip(TRAILING)) for w in text.split(" ")]
        return None if not all(forms) else _sounds("".join(forms))

    refs = [ref(t) for t in texts]
    units = [list(zip(p, d)) for p, d in zip(phones, durations)]
    for i in range(len(units) - 1):
        ra, rb = refs[i], refs[i + 1]
        if ra is None or rb is None or not units[i] or not units[i + 1]:
            continue
        a0, a1 = _split([s for s, _ in units[i]])
        b0, b1 = _split([s for s, _ in units[i + 1]])
        head, body_a, tail = units[i][:a0], units[i][a0:a1], units[i][a1:]
        lead, body_b, end = units[i + 1][:b0], units[i + 1][b0:b1], units[i + 1][b1:]

        def cost(x: list, y: list) -> int:
            return edit_distance(_sounds(s for s, _ in x), ra) + edit_distance(_sounds(s for s, _ in y), rb)

        options = [(body_a, body_b)]
        for n in range(1, reach + 1):
            fwd = _cut(body_a, n, from_end=True)  # the end of unit i starts unit i + 1
            back = _cut(body_b, n, from_end=False)  # the start of unit i + 1 ends unit i
            options += [(fwd[0], fwd[1] + body_b)] if fwd is not None else []
            options += [(body_a + back[1], back[0])] if back is not None else []
        best = min(options, key=lambda o: cost(*o))  # the first of the cheapest: edges stay on a tie
        units[i], units[i + 1] = head + best[0] + tail, lead + best[1] + end
    return [[s for s, _ in u] for u in units], [[d for _, d in u] for u in units]


def word_table(words: Iterable[str], phonemize: Callable[[str], str], known: Iterable[str], *,
               progress: bool = True) -> dict[str, str]:
    """Each distinct word of ``words`` (lowercased; letters with inner apostrophes only) ->
    its phones as ``phonemize`` says it alone, kept where every symbol is in ``known``."""
    from tqdm import tqdm

    known = set(known)
    todo = sorted({w.strip().lower() for w in words} - {""})
    out: dict[str, str] = {}
    for w in tqdm(todo, desc="words", unit="word", disable=not progress):
        if not _WORD.fullmatch(w):
            continue
        phones = phonemize(w).rstrip(" ")
        if phones and all(p in known for p in phones) and not set(phones) & set("^$"):
            out[w] = phones
    return out


def build_for_target(corpus_dir: str | Path | None, target_dir: str | Path, out: str | Path | None = None, *,
                     min_share: float = 0.1, words: str | Path | None = None, progress: bool = True,
                     ) -> tuple[Lexicon, Path, str]:
    """Build the lexicon of a phones target from its training corpus (or keep the one
    beside it, ``corpus_dir=None``), add the teacher's pronunciation of every word in the
    file ``words`` (one a line; needs the dev ``teacher`` extra) and save it (default:
    ``TARGET/lexicon.json``, where :meth:`Voice.load` finds it)."""
    from tqdm import tqdm

    from .vocab import VoiceVocab

    target_dir = Path(target_dir)
    vocab = VoiceVocab.from_dict(json.loads((target_dir / "config.json").read_text())["voicestream_vocab"])
    if vocab.layout != "phones":
        raise ValueError(f"a lexicon needs a phones-layout target, {target_dir} is {vocab.layout!r}")
    known = set(vocab.phones)
    path = Path(out) if out is not None else target_dir / FILENAME
    if words is not None:
        from .corpus import PiperTeacher

        teacher = PiperTeacher(alignments=False)
        listed = Path(words).read_text(encoding="utf-8", errors="replace").split()
        table = word_table(listed, teacher.phonemize_word, known, progress=progress)
        listed_what = f"; {len(table)} words from {Path(words).name}"
    else:
        table, listed_what = load_words(target_dir / WORDS_FILENAME), ""
    if corpus_dir is not None:
        from .shards import Corpus

        utts = Corpus(corpus_dir).utterances("train")
        sentences = [(t, p, d) for t, p, d in corpus_units(tqdm(utts, desc="lexicon", unit="utt", disable=not progress))
                     if all(s in known for run in p for s in run) and max(max(x, default=0) for x in d) < vocab.durations]
        if table:
            sentences = [(t, *realign_units(t, p, d, table)) for t, p, d in sentences]
        lex = Lexicon.build(sentences, min_share=min_share)
        what = f"{len(lex)} unit texts from {len(sentences)} of {len(utts)} utterances"
        what += " (edges realigned to the word table)" if table else ""
    else:
        lex = Lexicon.find(target_dir) or Lexicon()
        what = f"{len(lex.entries)} unit texts kept"
    lex.words = table
    what += listed_what
    lex.save(path)
    return lex, path, what


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build a pronunciation lexicon from a corpus (phones layout).")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="the training corpus whose alignments give the unit texts (default: keep TARGET's)")
    ap.add_argument("--target", type=Path, required=True, help="the target whose phone inventory the lexicon uses")
    ap.add_argument("--out", type=Path, default=None, help=f"default: TARGET/{FILENAME}")
    ap.add_argument("--min-share", type=float, default=0.1, help="drop variants heard less often than this")
    ap.add_argument("--words", type=Path, default=None,
                    help="a word list (one a line, e.g. /usr/share/dict/american-english): each word's teacher "
                         f"pronunciation goes to {WORDS_FILENAME} for units the corpus never heard")
    args = ap.parse_args(argv)
    if args.corpus is None and args.words is None:
        ap.error("give --corpus, --words or both")
    _, path, what = build_for_target(args.corpus, args.target, args.out, min_share=args.min_share, words=args.words)
    print(f"lexicon: {what} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
