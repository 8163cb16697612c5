"""Incremental sentence/clause segmentation of streaming LLM text.

TTS latency is set by how soon the first speakable chunk is known, so a
segment is released the moment its end is certain: ``.!?`` followed by
whitespace or a capital letter (``"one.Two"``), a clause mark ``, ; :``
once the segment is long enough, a newline, or a forced cut at the last
space before ``max_chars``.  A ``.`` at the very end of the buffer waits for
one more character because it may be a decimal point ("3." + "5") or part of
an abbreviation; ``?`` and ``!`` are released immediately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["MAYBE_FINAL_ABBREVIATIONS", "NO_SPLIT_ABBREVIATIONS", "SegmenterConfig", "SentenceSegmenter"]

#: A period after these never ends a sentence (titles, "e.g.", "vs.").
NO_SPLIT_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "prof", "rev", "gen", "capt", "lt", "sgt", "col", "st", "mt", "vs", "e.g", "i.e", "cf", "approx", "fig", "al", "ca", "viz"]
)
#: These often end a sentence; split only if the next word is capitalised.
MAYBE_FINAL_ABBREVIATIONS = frozenset(["etc", "inc", "ltd", "co", "corp", "jr", "sr", "no", "dept", "ave", "blvd"])

_TERMINALS = ".!?"
_CLAUSE = ",;:"
_CLOSERS = "\"')]}\u201d\u2019\u00bb"
_LAST_WORD = re.compile(r"(\S+)$")


@dataclass(frozen=True)
class SegmenterConfig:
    """Length policy: short enough for low latency, long enough for good prosody."""

    min_clause_chars: int = 40  # split at , ; : only once the segment is this long
    max_chars: int = 200  # force a split (at the last space) beyond this
    no_split: frozenset[str] = field(default=NO_SPLIT_ABBREVIATIONS)
    maybe_final: frozenset[str] = field(default=MAYBE_FINAL_ABBREVIATIONS)

    def __post_init__(self) -> None:
        if self.max_chars < 1 or self.min_clause_chars < 0:
            raise ValueError("max_chars must be >= 1 and min_clause_chars >= 0")


class SentenceSegmenter:
    """Feed text fragments with :meth:`push`; get finished segments back."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()
        self._buf = ""
        self._drop_leading = False

    @property
    def buffered(self) -> str:
        """Text received but not yet emitted."""
        return self._buf

    def push(self, fragment: str) -> list[str]:
        """Add a fragment (any size, even one character); return complete segments."""
        if self._drop_leading:
            # "?"/"!" was released at the buffer end; its trailing quotes/marks
            # (e.g. '?"' split across tokens) belong to the emitted segment.
            stripped = fragment.lstrip(_CLOSERS + "!?")
            self._drop_leading = not stripped
            fragment = stripped
        self._buf += fragment
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of text: return everything left as segments."""
        out = self._drain(final=True)
        rest = self._buf.strip()
        self.reset()
        return out + ([rest] if rest else [])

    def reset(self) -> None:
        self._buf = ""
        self._drop_leading = False

    # ------------------------------------------------------------ internals
    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            cut = self._find_cut(self._buf, final)
            if cut is None:
                return out
            seg, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if seg:
                out.append(seg)
                self._drop_leading = not final and not self._buf and seg[-1] in "!?"

    def _find_cut(self, buf: str, final: bool) -> int | None:
        cfg = self.config
        n = len(buf)
        i = 0
        while i < n:
            ch = buf[i]
            if ch == "\n" and buf[:i].strip():
                return i
            if ch in _TERMINALS:
                decision, end = self._sentence_end(buf, i, final)
                if decision == "cut":
                    return end
                if decision == "wait":
                    break
                i = end
                continue
            if ch in _CLAUSE:
                end = _skip(buf, i + 1, _CLOSERS)
                if end < n and buf[end].isspace() and len(buf[:end].strip()) >= cfg.min_clause_chars:
                    return end
            i += 1
        if len(buf) > cfg.max_chars:
            space = max(buf.rfind(" ", 0, cfg.max_chars + 1), buf.rfind("\t", 0, cfg.max_chars + 1))
            return space if space > 0 else cfg.max_chars
        return None

    def _sentence_end(self, buf: str, i: int, final: bool) -> tuple[str, int]:
        """Decide on the terminal run starting at ``i``: ("cut"|"wait"|"skip", index)."""
        run_end = _skip(buf, i, _TERMINALS)
        end = _skip(buf, run_end, _CLOSERS)
        run = buf[i:run_end]
        if end == len(buf):
            if final or run[-1] in "!?":
                return "cut", end
            return "wait", end
        nxt = buf[end]
        if not (nxt.isspace() or nxt.isupper()):
            return "skip", end  # "3.5", "example.com", "e.g.,"
        if run == ".":
            word = _word_before(buf, i)
            if word in self.config.no_split or _is_initial(word):
                return "skip", end
            if word in self.config.maybe_final:
                k = _skip(buf, end, " \t\"'(")
                if k == len(buf):
                    return ("cut", end) if final else ("wait", end)
                return ("cut", end) if buf[k].isupper() else ("skip", end)
        return "cut", end


def _skip(buf: str, i: int, chars: str) -> int:
    while i < len(buf) and buf[i] in chars:
        i += 1
    return i


def _word_before(buf: str, i: int) -> str:
    m = _LAST_WORD.search(buf, 0, i)
    return m.group(1).lstrip("\"'([{\u201c\u2018").lower() if m else ""


def _is_initial(word: str) -> bool:
    """"J" in "J. K. Rowling", "u.s" in "U.S. Army": single letters with dots."""
    parts = word.split(".")
    return bool(word) and all(len(p) == 1 and p.isalpha() for p in parts)
