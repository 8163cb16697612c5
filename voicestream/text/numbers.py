"""Spell numbers as English words (cardinals, ordinals, years, decimals).

Kept separate from :mod:`normalize` so it can be unit tested and reused (e.g.
for WER text normalisation) without the regex pipeline.  Words are joined by
single spaces, never hyphens, because the TTS alphabet has no hyphen.
"""

from __future__ import annotations

__all__ = [
    "cardinal",
    "decimal",
    "digits",
    "ordinal",
    "pluralize_number_words",
    "year",
]

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
MAX_CARDINAL = 10**15 - 1  # beyond this, digits are read one by one


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def cardinal(n: int) -> str:
    """``1234 -> "one thousand two hundred thirty four"``; negatives get "minus"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n > MAX_CARDINAL:
        return digits(str(n))
    if n == 0:
        return "zero"
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            words += _below_thousand(n // value) + [name]
            n %= value
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def ordinal(n: int) -> str:
    """``21 -> "twenty first"``, ``12 -> "twelfth"``, ``100 -> "one hundredth"``."""
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(words[:-1] + [last])


def year(n: int) -> str:
    """Read a year the way people say it: 1999 "nineteen ninety nine",
    1905 "nineteen oh five", 1900 "nineteen hundred", 2007 "two thousand seven",
    2024 "twenty twenty four".  Outside 1100..2099 falls back to :func:`cardinal`."""
    if not 1100 <= n <= 2099 or 2000 <= n <= 2009:
        return cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{cardinal(hi)} hundred"
    if lo < 10:
        return f"{cardinal(hi)} oh {cardinal(lo)}"
    return f"{cardinal(hi)} {cardinal(lo)}"


def digits(s: str) -> str:
    """Read a digit string one digit at a time: ``"007" -> "zero zero seven"``."""
    return " ".join(_ONES[int(c)] for c in s if c.isdigit())


def decimal(s: str) -> str:
    """``"3.14" -> "three point one four"``; integer part read as a cardinal."""
    whole, _, frac = s.partition(".")
    head = cardinal(int(whole.replace(",", ""))) if whole else "zero"
    return f"{head} point {digits(frac)}" if frac else head


def pluralize_number_words(words: str) -> str:
    """Plural of a spelled number (``"nineteen ninety" -> "nineteen nineties"``), for "1990s"."""
    parts = words.split()
    last = parts[-1]
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last.endswith(("s", "x")):
        last += "es"
    else:
        last += "s"
    return " ".join(parts[:-1] + [last])
