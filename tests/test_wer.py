"""Scoring ASR transcripts: Whisper's digit groups are read the way the voice could have said them."""

import pytest

from voicestream.text.wer import number_readings, transcript_errors, word_errors

CARD = "Do you want to pay with the card ending in four five one two?"


def test_word_errors_counts_substitutions_insertions_and_deletions():
    assert word_errors("a b c".split(), "a b c".split()) == 0
    assert word_errors("a b c".split(), "a x c d".split()) == 2
    assert word_errors("a b c".split(), []) == 3


@pytest.mark.parametrize("hyp", ["Do you want to pay with the card ending in 4.512?",
                                 "Do you want to pay with the card ending in 4-5-1-2?",
                                 "Do you want to pay with the card ending in 4512?",
                                 "Do you want to pay with the card ending in four five one two"])
def test_digit_groups_read_digit_by_digit(hyp):
    assert transcript_errors(CARD, hyp) == (0, 14)


@pytest.mark.parametrize("ref, hyp", [
    ("I have booked a table for four people at seven thirty.", "I have booked a table for four people at 730."),
    ("The call is at twelve oh five.", "The call is at 1205."),
    ("I have booked a table for four people at seven thirty.", "I have booked a table for four people at 7.30."),
    ("The bus leaves at nine oh five.", "The bus leaves at 9.05."),
    ("Your car is due for an oil change in five hundred miles.", "Your car is due for an oil change in 500 miles."),
    ("Your refund of twenty dollars is ready.", "Your refund of $20 is ready."),
    ("The year was nineteen ninety nine.", "The year was 1999."),
])
def test_numbers_as_written_or_as_times_and_pairs(ref, hyp):
    errors, n = transcript_errors(ref, hyp)
    assert errors == 0 and n == len(ref.rstrip(".").replace("$", "").split())


def test_a_reading_never_hides_wrong_words_or_digits():
    assert transcript_errors(CARD, "Do you want to pay with the card ending in 4.513?")[0] == 1
    assert transcript_errors("Please enter the six digit code.", "Please enter the 6th digit code.")[0] == 1
    assert transcript_errors("I set a timer for fifteen minutes.", "I set 8 at the time for 15 minutes.")[0] == 4
    assert transcript_errors("Hello there.", "")[0] == 2


def test_number_readings():
    assert number_readings("730,") == ["730,", "7 3 0,", "7 30,"]
    assert number_readings("1900") == ["1900", "1 9 0 0"]  # "nineteen hundred" is the written reading
    assert number_readings("6th") == ["6th"] and number_readings("word") == ["word"]
    assert number_readings("7") == ["7"]
    assert number_readings("7.30.") == ["7.30.", "7 3 0.", "7 30."]
    assert number_readings("7.00") == ["7.00", "7 0 0"] and number_readings("7.305")[-1] == "7 3 0 5"
