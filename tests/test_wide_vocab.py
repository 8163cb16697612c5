"""The corpus generator's wide vocabulary: parts of speech recovered from a plain word list."""

import gzip
import json
from pathlib import Path

import pytest

import voicestream
from voicestream.voice.corpus import CorpusConfig, SyntheticTeacher, build_corpus
from voicestream.voice.sentences import ADJECTIVES, NOUNS, VERBS_BASE, sentences
from voicestream.voice.wide_vocab import WideVocab

WORDS = """walk walked walking walks table tables careful carefully happy happily gentle gently
cry cried crying cries stop stopped stopping stops bake baked baking bakes glass glasses
quickly quick box boxes idea ideas running""".split()

SHIPPED_TABLE = Path(voicestream.__file__).parent / "voice" / "default" / "target" / "words.tsv.gz"


def test_parts_of_speech_from_morphology():
    w = WideVocab.from_words(set(WORDS))
    assert dict(zip(w.verbs_base, w.verbs_past)) == {
        "walk": "walked", "cry": "cried", "stop": "stopped", "bake": "baked"}
    assert set(w.adjectives) == {"careful", "happy", "gentle", "quick"}
    assert set(w.adverbs) == {"carefully", "happily", "gently", "quickly"}
    assert set(w.nouns) == {"table", "glass", "box", "idea"}


def test_load_reads_lists_and_word_tables(tmp_path):
    plain = tmp_path / "words"
    plain.write_text("\n".join(WORDS + ["Paris", "can't"]) + "\n")
    table = tmp_path / "words.tsv.gz"
    with gzip.open(table, "wt") as f:
        f.writelines(f"{w}\tphones\n" for w in WORDS)
    assert WideVocab.load(plain) == WideVocab.load(table)
    (tmp_path / "empty").write_text("Paris\n")
    with pytest.raises(ValueError, match="no lower-case words"):
        WideVocab.load(tmp_path / "empty")


@pytest.mark.skipif(not SHIPPED_TABLE.is_file(), reason="the built-in voice's word table is not installed")
def test_wide_sentences_mix_new_words_in_and_leave_old_corpora_alone():
    wide = WideVocab.load(SHIPPED_TABLE)
    assert len(wide.nouns) > 5000 and len(wide.adjectives) > 1000 and len(wide.verbs_base) > 3000
    plain = list(sentences(400, seed=3))
    assert plain == list(sentences(400, seed=3, wide=None))  # no wide list: the old stream, draw for draw
    mixed = list(sentences(400, seed=3, wide=wide))
    assert mixed == list(sentences(400, seed=3, wide=wide))
    core = {w.lower() for w in NOUNS + ADJECTIVES + VERBS_BASE}
    words = lambda ss: {w.strip(".,?!;:\"").lower() for s in ss for w in s.split()}  # noqa: E731
    new_plain, new_mixed = words(plain) - core, words(mixed) - core
    assert len(new_mixed) > len(new_plain) + 300  # hundreds of content words the core lists lack
    assert set(wide.nouns) & new_mixed and set(wide.verbs_past) & new_mixed


def test_corpus_config_keeps_old_manifests_and_records_the_list(tmp_path):
    words = tmp_path / "words"
    words.write_text("\n".join(WORDS) + "\n")
    old = build_corpus(tmp_path / "old", CorpusConfig(n=2, heldout=1, seed=3), teacher=SyntheticTeacher(), progress=False)
    assert "wide_words" not in old.manifest["config"]
    cfg = CorpusConfig(n=2, heldout=1, seed=3, wide_words=str(words), wide_share=1.0)
    new = build_corpus(tmp_path / "new", cfg, teacher=SyntheticTeacher(), progress=False)
    assert new.manifest["config"]["wide_words"] == str(words)
    texts = " ".join(u.text for sp in ("train", "heldout") for u in new.utterances(sp)).lower()
    assert texts != " ".join(u.text for sp in ("train", "heldout") for u in old.utterances(sp)).lower()


def test_recipe_wide_share_needs_its_word_list(tmp_path, capsys):
    from voicestream.voice import recipe

    with pytest.raises(SystemExit) as e:
        recipe.main(["--out", str(tmp_path / "run"), "--wide-share", "0.5"])
    assert e.value.code == 2 and "pass --words too" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_corpus_grows_from_the_same_words_anywhere_but_not_from_other_words(tmp_path):
    here, there = tmp_path / "words", tmp_path / "elsewhere.tsv.gz"
    here.write_text("\n".join(WORDS) + "\n")
    with gzip.open(there, "wt") as f:  # the same words in another file and format
        f.writelines(f"{w}\tphones\n" for w in WORDS)
    cfg = lambda n, words: CorpusConfig(n=n, heldout=1, seed=3, shard_size=2,  # noqa: E731
                                        wide_words=str(words), wide_share=1.0)
    first = build_corpus(tmp_path / "c", cfg(2, here), teacher=SyntheticTeacher(), progress=False)
    assert first.manifest["wide_vocab_sha256"] == WideVocab.load(here).digest()
    grown = build_corpus(tmp_path / "c", cfg(4, there), teacher=SyntheticTeacher(), progress=False)
    assert len(grown.utterances("train")) == 4
    assert [s["n"] for s in grown.manifest["shards"]] == [1, 2, 2]
    assert sum(s["tokens"] for s in grown.manifest["shards"]) == sum(
        u.tokens.size for sp in ("train", "heldout") for u in grown.utterances(sp))
    here.write_text("\n".join(w for w in WORDS if w not in ("walk", "walked")) + "\n")  # the list changed
    with pytest.raises(ValueError, match="gives other words"):
        build_corpus(tmp_path / "c", cfg(6, here), teacher=SyntheticTeacher(), progress=False)
    # a manifest from before the digest was recorded still resumes, by path
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    del m["wide_vocab_sha256"]
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="different config"):
        build_corpus(tmp_path / "c", cfg(6, here), teacher=SyntheticTeacher(), progress=False)
    assert len(build_corpus(tmp_path / "c", cfg(6, there), teacher=SyntheticTeacher(),
                            progress=False).utterances("train")) == 6
