"""Text normalisation for the built-in voice: raw text -> speakable lowercase ASCII.

Pure Python (no GPL phonemiser): the default voice is character-level, so
everything a reader would *say* must be spelled out (numbers, currency,
abbreviations) and everything else reduced to a small alphabet.  Sentence
punctuation (, . ? ! ; :) is kept because it drives prosody.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from . import numbers as num

__all__ = ["EmptyTextError", "NormalizerConfig", "fold_unicode", "normalize_text"]


class EmptyTextError(ValueError):
    """Input is empty, whitespace-only, or has nothing speakable after normalisation."""


@dataclass(frozen=True)
class NormalizerConfig:
    """Switches for the optional steps (all on for TTS input)."""

    expand_abbreviations: bool = True
    expand_numbers: bool = True
    keep_punctuation: bool = True  # False: drop , . ? ! ; : (e.g. for WER scoring)


# ----------------------------------------------------------------- unicode
_CHAR_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2033": '"', "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2212": "-",
    "\u2026": "...", "\u00a0": " ", "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE",
    "\u0153": "oe", "\u0152": "OE", "\u00f8": "o", "\u00d8": "O", "\u0142": "l", "\u0141": "L",
    "\u0111": "d", "\u0110": "D", "\u00fe": "th", "\u00de": "Th", "\u00f0": "d", "\u00d0": "D",
    "\u0131": "i", "\u00bd": " one half ", "\u00bc": " one quarter ", "\u00be": " three quarters ",
    "\u2153": " one third ", "\u2154": " two thirds ",
}
_CHAR_TABLE = str.maketrans(_CHAR_MAP)
_DASH_BETWEEN_DIGITS = re.compile(r"(?<=\d)\s*[\u2013\u2014]\s*(?=\d)")
_LONG_DASH = re.compile(r"\s*[\u2013\u2014\u2015]+\s*|\s+-{1,3}\s+|(?<=\w)--+(?=\w)")


def fold_unicode(text: str) -> str:
    """NFKC, straight quotes, dashes -> ", " (or "-" between digits). Keeps
    currency symbols and accents; :func:`_to_ascii` strips accents later."""
    text = unicodedata.normalize("NFKC", text.translate(_CHAR_TABLE)).translate(_CHAR_TABLE)
    text = _DASH_BETWEEN_DIGITS.sub("-", text)
    return _LONG_DASH.sub(", ", text)


def _to_ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c if c.isascii() else " " for c in stripped)


# ----------------------------------------------------------- abbreviations
# (pattern, replacement, can_end_sentence).  Titles never end a sentence, so
# their period is dropped; "etc." style ones keep a period when they do.
_ABBREVIATIONS: list[tuple[re.Pattern[str], str, bool]] = [
    (re.compile(p, flags), r, end)
    for p, r, end, flags in [
        (r"\bMrs\.", "missus", False, 0),
        (r"\bMr\.", "mister", False, 0),
        (r"\bMs\.", "miz", False, 0),
        (r"\bProf\.", "professor", False, 0),
        (r"\bRev\.", "reverend", False, 0),
        (r"\bGen\.", "general", False, 0),
        (r"\bCapt\.", "captain", False, 0),
        (r"\bLt\.", "lieutenant", False, 0),
        (r"\bSgt\.", "sergeant", False, 0),
        (r"\bMt\.", "mount", False, 0),
        (r"\bvs\.?(?=\s)", "versus", False, re.IGNORECASE),
        (r"\be\.g\.", "for example", False, re.IGNORECASE),
        (r"\bi\.e\.", "that is", False, re.IGNORECASE),
        (r"\bapprox\.", "approximately", False, re.IGNORECASE),
        (r"\bNo\.(?=\s*\d)", "number", False, re.IGNORECASE),
        (r"\bFig\.(?=\s*\d)", "figure", False, re.IGNORECASE),
        (r"\bJr\.", "junior", True, 0),
        (r"\bSr\.", "senior", True, 0),
        (r"\betc\.", "et cetera", True, re.IGNORECASE),
        (r"\bInc\.", "incorporated", True, 0),
        (r"\bLtd\.", "limited", True, 0),
        (r"\bCorp\.", "corporation", True, 0),
        (r"\bCo\.", "company", True, 0),
        (r"\bAve\.", "avenue", True, 0),
        (r"\bBlvd\.", "boulevard", True, 0),
        (r"\bDept\.", "department", True, 0),
    ]
]
# Context-dependent: "Dr. Smith" vs "Elm Dr.", "St. Louis" vs "Main St."
_BEFORE_NAME = r"(?=\s+[A-Z])"
_CONTEXT_ABBREVIATIONS = [
    (re.compile(r"\bDr\." + _BEFORE_NAME), "doctor", False),
    (re.compile(r"\bSt\." + _BEFORE_NAME), "saint", False),
    (re.compile(r"\bDr\."), "drive", True),
    (re.compile(r"\bSt\."), "street", True),
]
_SENTENCE_FOLLOWS = re.compile(r"\s*$|\s+[\"'(]*[A-Z]")
_SYMBOLS = [
    (re.compile(r"\s*&\s*"), " and "),
    (re.compile(r"(?<=\w)@(?=\w)"), " at "),
    (re.compile(r"\s*@\s*"), " at "),
    (re.compile(r"\s*\+\s*"), " plus "),
    (re.compile(r"\s*=\s*"), " equals "),
    (re.compile(r"#\s*(?=\d)"), "number "),
]


def _period_if_sentence_end(m: re.Match[str]) -> str:
    """An abbreviation's period that also ends the sentence must survive expansion."""
    return "." if m.group(0).endswith(".") and _SENTENCE_FOLLOWS.match(m.string, m.end()) else ""


_INITIALISM = re.compile(r"\b(?:[A-Za-z]\.){2,}")


def _initialism(m: re.Match[str]) -> str:
    """"U.S." -> "U S" (spoken letter by letter, no sentence stops inside)."""
    return " ".join(m.group(0).replace(".", "")) + _period_if_sentence_end(m)


def _expand_abbreviations(text: str) -> str:
    for pattern, repl, can_end in _ABBREVIATIONS:

        def sub(m: re.Match[str], repl: str = repl, can_end: bool = can_end) -> str:
            return repl + (_period_if_sentence_end(m) if can_end else "")

        text = pattern.sub(sub, text)
    text = _INITIALISM.sub(_initialism, text)
    for pattern, repl, can_end in _CONTEXT_ABBREVIATIONS:
        text = pattern.sub(lambda m, r=repl, e=can_end: r + (_period_if_sentence_end(m) if e else ""), text)
    for pattern, repl in _SYMBOLS:
        text = pattern.sub(repl, text)
    return text


# ----------------------------------------------------------------- numbers
_NUM = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents"), "¥": ("yen", "yen", "sen", "sen")}
_SCALE_WORDS = {"k": "thousand", "thousand": "thousand", "m": "million", "million": "million",
                "bn": "billion", "b": "billion", "billion": "billion", "trillion": "trillion"}
_CURRENCY_RE = re.compile(
    r"([$£€¥])\s?(" + _NUM + r")(?:\.(\d+))?(?:\s?(thousand|million|billion|trillion|bn|k|m|b)\b)?", re.IGNORECASE
)
_PERCENT_RE = re.compile(r"(-?)(" + _NUM + r")(?:\.(\d+))?\s?%")
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b(?:\s?([ap])\.?\s?m\b\.?)?", re.IGNORECASE)
_AMPM_RE = re.compile(r"\b(\d{1,2})\s?([ap])\.?\s?m\b\.?", re.IGNORECASE)
_ORDINAL_RE = re.compile(r"\b(" + _NUM + r")(st|nd|rd|th)\b", re.IGNORECASE)
_PHONE_RE = re.compile(r"\b(?:\d{3}-)?\d{3}-\d{4}\b")
_RANGE_RE = re.compile(r"(?<=\d)\s?-\s?(?=\d)")
_NEGATIVE_RE = re.compile(r"(?<![\w.])-(?=\d)")
_DECIMAL_RE = re.compile(r"(" + _NUM + r")?\.(\d+)\b")
_PLURAL_RE = re.compile(r"\b(\d+)'?s\b")
_INT_RE = re.compile(_NUM)


def _int(s: str) -> int:
    return int(s.replace(",", ""))


def _say_integer(s: str) -> str:
    """Plain integer token: years read as years, leading zeros digit by digit."""
    if len(s) > 1 and s[0] == "0":
        return num.digits(s)
    if "," not in s and len(s) == 4 and 1100 <= int(s) <= 2099:
        return num.year(int(s))
    return num.cardinal(_int(s))


def _currency(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m.group(1)]
    whole, frac, scale = m.group(2), m.group(3), m.group(4)
    if scale:
        amount = num.decimal(f"{whole}.{frac}") if frac else num.cardinal(_int(whole))
        return f" {amount} {_SCALE_WORDS[scale.lower()]} {many} "
    units = _int(whole)
    cents = int((frac + "0")[:2]) if frac else 0
    parts = []
    if units or not cents:
        parts.append(f"{num.cardinal(units)} {one if units == 1 else many}")
    if cents:
        parts.append(f"{num.cardinal(cents)} {sub_one if cents == 1 else sub_many}")
    return " " + " and ".join(parts) + " "


def _percent(m: re.Match[str]) -> str:
    sign = "minus " if m.group(1) else ""
    value = num.decimal(f"{m.group(2)}.{m.group(3)}") if m.group(3) else num.cardinal(_int(m.group(2)))
    return f" {sign}{value} percent "


def _ampm(m: re.Match[str], letter: str | None) -> str:
    if not letter:
        return ""
    return f" {letter.lower()} m" + _period_if_sentence_end(m)


def _time(m: re.Match[str]) -> str:
    h, mins = int(m.group(1)), int(m.group(2))
    if mins == 0:
        spoken = f"{num.cardinal(h)} o'clock" if not m.group(3) else num.cardinal(h)
    elif mins < 10:
        spoken = f"{num.cardinal(h)} oh {num.cardinal(mins)}"
    else:
        spoken = f"{num.cardinal(h)} {num.cardinal(mins)}"
    return f" {spoken}{_ampm(m, m.group(3))} "


def _decimal(m: re.Match[str]) -> str:
    return f" {num.decimal((m.group(1) or '0') + '.' + m.group(2))} "


def _plural(m: re.Match[str]) -> str:
    return f" {num.pluralize_number_words(_say_integer(m.group(1)))} "


def _expand_numbers(text: str) -> str:
    text = _CURRENCY_RE.sub(_currency, text)
    text = _PERCENT_RE.sub(_percent, text)
    text = _TIME_RE.sub(_time, text)
    text = _AMPM_RE.sub(lambda m: f" {num.cardinal(int(m.group(1)))}{_ampm(m, m.group(2))} ", text)
    text = _ORDINAL_RE.sub(lambda m: f" {num.ordinal(_int(m.group(1)))} ", text)
    text = _PHONE_RE.sub(lambda m: " " + ", ".join(num.digits(g) for g in m.group(0).split("-")) + " ", text)
    text = _RANGE_RE.sub(" to ", text)
    text = _NEGATIVE_RE.sub("minus ", text)
    text = _DECIMAL_RE.sub(_decimal, text)
    text = _PLURAL_RE.sub(_plural, text)
    return _INT_RE.sub(lambda m: f" {_say_integer(m.group(0))} ", text)


# ------------------------------------------------------------- punctuation
PUNCTUATION = ",.?!;:"
_PUNCT_STRENGTH = {c: i for i, c in enumerate(",:;.!?")}
_BRACKETS = re.compile(r"[()\[\]{}]")
_ELLIPSIS_PAUSE = re.compile(r"\.{2,}(?=\s*[a-z])")  # "wait... what" -> "wait, what"
_ELLIPSIS = re.compile(r"\.{2,}")
_APOSTROPHE = re.compile(r"(?<![a-z])'|'(?![a-z])")
_POSSESSIVE_PLURAL = re.compile(r"(?<=s)'(?=\s|[,.?!;:]|$)")
_NOT_ALLOWED = re.compile(r"[^a-z' ,.?!;:]")
_PUNCT_RUN = re.compile(r"[\s,.?!;:]*[,.?!;:][\s,.?!;:]*")


def _strongest(run: str) -> str:
    marks = [c for c in run if c in _PUNCT_STRENGTH]
    return max(marks, key=_PUNCT_STRENGTH.__getitem__)


def _clean_punctuation(text: str, keep: bool) -> str:
    text = _BRACKETS.sub(", ", text)
    text = _ELLIPSIS_PAUSE.sub(",", text)
    text = _ELLIPSIS.sub(".", text)
    text = text.replace("-", " ").replace("/", " ").replace("_", " ")
    text = _POSSESSIVE_PLURAL.sub("\0", text)  # protect "dogs'" from the quote stripper
    text = _APOSTROPHE.sub(" ", text).replace("\0", "'")
    text = _NOT_ALLOWED.sub(" ", text)
    if not keep:
        return re.sub(r"[,.?!;:]", " ", text)
    text = _PUNCT_RUN.sub(lambda m: _strongest(m.group(0)) + " ", text)
    return text.lstrip(PUNCTUATION + " ")


# -------------------------------------------------------------------- main
def normalize_text(text: str, config: NormalizerConfig | None = None) -> str:
    """Raw text -> lowercase ASCII words, single spaces, prosodic punctuation.

    Raises :class:`EmptyTextError` when nothing speakable is left.
    """
    cfg = config or NormalizerConfig()
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    if not text.strip():
        raise EmptyTextError("text is empty or whitespace only")
    text = fold_unicode(text)
    if cfg.expand_abbreviations:
        text = _expand_abbreviations(text)
    if cfg.expand_numbers:
        text = _expand_numbers(text)
    text = re.sub(r"\d+", lambda m: f" {num.digits(m.group(0))} ", text)  # any leftovers
    text = _to_ascii(text).lower()
    text = _clean_punctuation(text, cfg.keep_punctuation)
    text = re.sub(r"\s+", " ", text).strip()
    if not re.search(r"[a-z]", text):
        raise EmptyTextError("nothing speakable left after normalisation")
    return text
