"""SentenceSegmenter on scripted token streams."""

from __future__ import annotations

import pytest

from voicestream.text.segment import SegmenterConfig, SentenceSegmenter


def feed(fragments, config: SegmenterConfig | None = None) -> tuple[list[tuple[int, str]], list[str]]:
    """Return (push index at which each segment appeared, segment) and the flush result."""
    seg = SentenceSegmenter(config)
    emitted = []
    for i, frag in enumerate(fragments):
        emitted += [(i, s) for s in seg.push(frag)]
    return emitted, seg.flush()


def all_segments(fragments, config: SegmenterConfig | None = None) -> list[str]:
    emitted, rest = feed(fragments, config)
    return [s for _, s in emitted] + rest


LLM_TOKENS = ["Hello", " there", ".", " Dr", ".", " Smith", " paid", " $", "3", ".", "50", " for", " it",
              ",", " e", ".g", ".", " a", " coffee", ".", "One", " more", "?", "Yes", "!", " The", " end"]


def test_scripted_llm_stream() -> None:
    emitted, rest = feed(LLM_TOKENS)
    assert [s for _, s in emitted] == [
        "Hello there.",
        "Dr. Smith paid $3.50 for it, e.g. a coffee.",
        "One more?",
        "Yes!",
    ]
    assert rest == ["The end"]


def test_segments_are_released_without_waiting_for_the_next_word() -> None:
    emitted, _ = feed(LLM_TOKENS)
    at = {s: i for i, s in emitted}
    assert at["Hello there."] == LLM_TOKENS.index(" Dr")  # the space settles the period
    assert at["Dr. Smith paid $3.50 for it, e.g. a coffee."] == LLM_TOKENS.index("One")  # capital: "coffee.One"
    assert at["One more?"] == LLM_TOKENS.index("?")  # '?' is released at once
    assert at["Yes!"] == LLM_TOKENS.index("!")


@pytest.mark.parametrize("chunk", [1, 2, 5, 1000])
def test_result_is_independent_of_fragmenting(chunk: int) -> None:
    text = "".join(LLM_TOKENS)
    frags = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    assert all_segments(frags) == all_segments(LLM_TOKENS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I paid 3.5 dollars. Then left.", ["I paid 3.5 dollars.", "Then left."]),
        ("one.Two", ["one.", "Two"]),
        ("See example.com for more.", ["See example.com for more."]),
        ("Mr. and Mrs. Smith met St. Peter.", ["Mr. and Mrs. Smith met St. Peter."]),
        ("J. K. Rowling wrote it. Yes.", ["J. K. Rowling wrote it.", "Yes."]),
        ("Apples, pears etc. and more. Done", ["Apples, pears etc. and more.", "Done"]),
        ("We sell apples etc. They sell pears.", ["We sell apples etc.", "They sell pears."]),
        # fed one char at a time, "?" is released before "!" arrives; the stray "!" is dropped
        ("Wait... What? Really?! Yes.", ["Wait...", "What?", "Really?", "Yes."]),
        ('He said "Hi." Then left.', ['He said "Hi."', "Then left."]),
        ("First line\nSecond line", ["First line", "Second line"]),
    ],
)
def test_sentence_boundaries(text: str, expected: list[str]) -> None:
    assert all_segments(list(text)) == expected


def test_period_at_buffer_end_waits_for_next_char() -> None:
    seg = SentenceSegmenter()
    assert seg.push("It costs 3.") == []  # could be "3.5"
    assert seg.push("5 dollars. ") == ["It costs 3.5 dollars."]
    assert seg.buffered == ""


def test_ambiguous_abbreviation_waits_then_decides() -> None:
    seg = SentenceSegmenter()
    assert seg.push("Apples etc. ") == []
    assert seg.push("and pears.") == []
    seg2 = SentenceSegmenter()
    assert seg2.push("Apples etc. ") == []
    assert seg2.push("Then pears.") == ["Apples etc."]


def test_clause_split_only_after_min_length() -> None:
    cfg = SegmenterConfig(min_clause_chars=15)
    text = "Short, still short, and now long enough; then more: end"
    assert all_segments(list(text), cfg) == ["Short, still short,", "and now long enough;", "then more: end"]
    # numbers with commas are not clause boundaries
    assert all_segments(["We counted 1,000,000 stars, maybe more"], SegmenterConfig(min_clause_chars=5)) == [
        "We counted 1,000,000 stars,",
        "maybe more",
    ]


def test_max_length_forces_split_at_last_space() -> None:
    cfg = SegmenterConfig(max_chars=30)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"
    out = all_segments(list(words), cfg)
    assert all(len(s) <= 30 for s in out)
    assert " ".join(out) == words
    assert out[0] == "alpha beta gamma delta epsilon"
    # no whitespace at all: hard cut
    assert all_segments(["x" * 70], cfg) == ["x" * 30, "x" * 30, "x" * 10]


def test_split_quote_after_question_is_not_a_segment() -> None:
    emitted, rest = feed(['"Really?', '"', " he asked."])
    assert [s for _, s in emitted] == ['"Really?']
    assert rest == ["he asked."]
    assert all_segments(["Really?!", " Yes."]) == ["Really?!", "Yes."]


def test_flush_and_reset() -> None:
    seg = SentenceSegmenter()
    assert seg.push("   ") == []
    assert seg.flush() == []
    seg.push("Unfinished thought")
    seg.reset()
    assert seg.buffered == "" and seg.flush() == []
    seg.push("Ends with a period.")
    assert seg.flush() == ["Ends with a period."]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SegmenterConfig(max_chars=0)
