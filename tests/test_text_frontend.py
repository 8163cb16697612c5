"""Text normaliser, number spelling and character tokenizer."""

from __future__ import annotations

import pytest

from voicestream.text import numbers as num
from voicestream.text.normalize import EmptyTextError, NormalizerConfig, normalize_text
from voicestream.text.tokenizer import ALPHABET, BOS_ID, EOS_ID, PAD_ID, CharTokenizer, UnknownCharacterError


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety nine"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (1000, "one thousand"),
        (1234567, "one million two hundred thirty four thousand five hundred sixty seven"),
        (2_000_000_005, "two billion five"),
        (-12, "minus twelve"),
    ],
)
def test_cardinal(n: int, words: str) -> None:
    assert num.cardinal(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (12, "twelfth"), (20, "twentieth"),
     (21, "twenty first"), (103, "one hundred third"), (1000, "one thousandth")],
)
def test_ordinal(n: int, words: str) -> None:
    assert num.ordinal(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1999, "nineteen ninety nine"), (1905, "nineteen oh five"), (1900, "nineteen hundred"),
     (2000, "two thousand"), (2007, "two thousand seven"), (2024, "twenty twenty four"), (1066, "one thousand sixty six")],
)
def test_year(n: int, words: str) -> None:
    assert num.year(n) == words


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello,   World!", "hello, world!"),
        ("It costs $3.50 today.", "it costs three dollars and fifty cents today."),
        ("$1 or $0.01 or £5", "one dollar or one cent or five pounds"),
        ("€2.5 million", "two point five million euros"),
        ("Born in 1999, not 2005 or 2024.", "born in nineteen ninety nine, not two thousand five or twenty twenty four."),
        ("He came 1st, she 22nd and 103rd.", "he came first, she twenty second and one hundred third."),
        ("Pi is 3.14", "pi is three point one four"),
        ("Growth was 3.5% vs. 4%.", "growth was three point five percent versus four percent."),
        ("There were 1,234 people.", "there were one thousand two hundred thirty four people."),
        ("It is -5 degrees.", "it is minus five degrees."),
        ("In the 1990s and the 80s.", "in the nineteen nineties and the eighties."),
        ("Meet at 3:30 p.m. or 10am. OK?", "meet at three thirty p m or ten a m. ok?"),
        ("Mr. Smith met Dr. Jones on Elm Dr. yesterday.", "mister smith met doctor jones on elm drive yesterday."),
        ("St. Louis is on Main St.", "saint louis is on main street."),
        ("Apples, pears, etc. Then more.", "apples, pears, et cetera. then more."),
        ("Use e.g. this, i.e. that.", "use for example this, that is that."),
        ("Room #5, No. 7.", "room number five, number seven."),
        ("Café naïve façade — really?!", "cafe naive facade, really?"),
        ("\u201cQuoted\u201d text\u2026 with \u2018single\u2019 quotes", "quoted text, with single quotes"),
        ("The dogs' bones and John's car don't match.", "the dogs' bones and john's car don't match."),
        ("Pages 10-20 and 1990\u20132000", "pages ten to twenty and nineteen ninety to two thousand"),
        ("AT&T", "at and t"),
        ("Agent 007", "agent zero zero seven"),
        ("x = 2 + 2", "x equals two plus two"),
        ("Stra\u00dfe \u00c6sir", "strasse aesir"),
        ("ﬁne ＡＢＣ", "fine abc"),  # NFKC ligature and full-width letters
        ("Wait...   what?!\n\nYes;  no:  maybe", "wait, what? yes; no: maybe"),
        ("Add \u00bd cup.", "add one half cup."),
        ("The U.S. economy. The U.K. one", "the u s economy. the u k one"),
        ("Call 555-1234 now", "call five five five, one two three four now"),
    ],
)
def test_normalize_examples(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_normalize_output_stays_in_alphabet() -> None:
    messy = "Ünïcödé ½ — “quotes” 42nd $9.99 100% 3:05 (x) [y] {z} <b>bold</b> @user #1 50/50 ~tilde~ 你好 emoji 🙂"
    out = normalize_text(messy)
    assert set(out) <= set(ALPHABET)
    assert "  " not in out and out == out.strip()
    assert not any(c.isdigit() for c in out)


def test_normalize_without_punctuation() -> None:
    out = normalize_text("Hi, Dr. Who! Is it 5?", NormalizerConfig(keep_punctuation=False))
    assert out == "hi doctor who is it five"


@pytest.mark.parametrize("bad", ["", "   ", "\n\t ", "!!! ...", "\u00a0", "🙂"])
def test_empty_text_raises(bad: str) -> None:
    with pytest.raises(EmptyTextError):
        normalize_text(bad)
    assert issubclass(EmptyTextError, ValueError)


def test_non_string_raises_type_error() -> None:
    with pytest.raises(TypeError):
        normalize_text(None)  # type: ignore[arg-type]


# --------------------------------------------------------------- tokenizer
def test_tokenizer_vocab_and_special_ids() -> None:
    tok = CharTokenizer()
    assert tok.vocab_size == 37 == 3 + len(ALPHABET)
    assert (PAD_ID, BOS_ID, EOS_ID) == (0, 1, 2)
    assert tok.encode("a", add_special=False) == [11]
    assert tok.encode(" ", normalize=False, add_special=False) == [3]
    assert tok.encode("z", add_special=False) == [36]


def test_tokenizer_round_trip() -> None:
    tok = CharTokenizer()
    ids = tok.encode("Dr. Who paid $3.50!")
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == "doctor who paid three dollars and fifty cents!"
    assert tok.decode([PAD_ID, *ids, PAD_ID]) == tok.decode(ids)
    text = "it's fine, isn't it? yes; no: ok."
    assert tok.decode(tok.encode(text, normalize=False)) == text


def test_tokenizer_errors() -> None:
    tok = CharTokenizer()
    with pytest.raises(UnknownCharacterError):
        tok.encode("Capital", normalize=False)
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])
    with pytest.raises(EmptyTextError):
        tok.encode("   ")
