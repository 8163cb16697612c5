"""The pronunciation lexicon: building it, and decoding the phones layout under it."""

import pytest
import torch

from voicestream.voice.lexicon import FILENAME, WORDS_FILENAME, Lexicon, build_for_target, realign_units, word_table
from voicestream.voice.masking import TextFollowing
from voicestream.voice.presets import PRESETS, build_model
from voicestream.voice.vocab import GrammarState, VoiceVocab

PHONES = ("^", "$", " ", ".", "h", "a", "ɪ", "ə", "ð", "k", "æ", "t")


def _sentences():
    # (unit texts, per-unit phone symbols): "hi" said two ways mid-sentence, once alone
    return [
        (["hi", "the cat."], [["^", "h", "a", "ɪ", " "], ["ð", "ə", "k", "æ", "t", ".", "$"]]),
        (["hi", "hi", "the cat."], [["^", "h", "a", "ɪ", " "], ["h", "a", "ɪ", " "], ["ð", "ə", "k", "æ", "t", ".", "$"]]),
        (["hi", "hi", "the cat."], [["^", "h", "a", "ɪ", " "], ["h", "ɪ", " "], ["ð", "ə", "k", "æ", "t", ".", "$"]]),
        (["hi", "hi", "hi."], [["^", "h", "a", "ɪ", " "], ["h", "a", "ɪ", " "], ["h", "a", "ɪ", ".", "$"]]),
        (["hi."], [["^", "h", "a", "ɪ", ".", "$"]]),
    ]


def test_lexicon_keeps_variants_by_place_in_the_sentence_and_round_trips(tmp_path):
    lex = Lexicon.build(_sentences())
    assert len(lex) == 3 and "hi" in lex and "cat." not in lex
    assert lex.variants("hi", True, False) == [("^", "h", "a", "ɪ", " ")]
    assert sorted(lex.variants("hi", False, False)) == [("h", "a", "ɪ", " "), ("h", "ɪ", " ")]
    assert lex.variants("hi", False, False)[0] == ("h", "a", "ɪ", " ")  # most frequent first
    assert lex.variants("hi.", False, True) == [("h", "a", "ɪ", ".", "$")]
    assert lex.variants("hi.", True, True) == [("^", "h", "a", "ɪ", ".", "$")]
    # never heard at this place: every variant of the text
    assert set(lex.variants("the cat.", True, True)) == {("ð", "ə", "k", "æ", "t", ".", "$")}
    assert lex.variants("dog", False, False) == []
    assert lex.extends("the") and not lex.extends("hi") and not lex.extends("the cat.")
    rare = Lexicon.build(_sentences(), min_share=0.5)
    assert rare.variants("hi", False, False) == [("h", "a", "ɪ", " ")]  # 1 of 3: dropped at 0.5
    lex.save(tmp_path / FILENAME)
    back = Lexicon.find(tmp_path)
    assert back.entries == lex.entries and back.extends("the")
    assert Lexicon.find(tmp_path / "missing") is None
    with pytest.raises(ValueError, match="one phone list per unit"):
        Lexicon.build([(["a", "b"], [["h"]])])
    (tmp_path / "bad.json").write_text('{"format": 9, "entries": {}}')
    with pytest.raises(ValueError, match="format"):
        Lexicon.load(tmp_path / "bad.json")


def _walk(tf, vocab, tokens, state=None):
    state = tf.initial() if state is None else state
    for t in tokens:
        state = tf.step(state, t)
    return state


def _phones_of(row, vocab):
    lo, hi = vocab.phone_range
    return {vocab.phones[i] for i in range(hi - lo) if row[lo + i]}


def test_text_following_lets_the_lm_choose_only_among_the_lexicon_variants():
    vocab = VoiceVocab(layout="phones", phones=PHONES)
    tf = TextFollowing(vocab, lexicon=Lexicon.build(_sentences()))
    ch = lambda s: vocab.text_ids(s, normalize=False)  # noqa: E731
    state = _walk(tf, vocab, [*vocab.prompt_for("hi the cat."), vocab.word_id, *ch("hi")])
    row = tf.allowed(state)  # "hi" is a word no key extends: the unit ends, its first phone is the lexicon's
    assert _phones_of(row, vocab) == {"^"} and tf.forced(state) == vocab.phone_id("^")
    state = _walk(tf, vocab, [vocab.phone_id("^"), vocab.duration_id(1)], state)
    assert state.g == GrammarState.UNIT_PHONES
    assert tf.forced(state) == vocab.phone_id("h")  # one variant: the whole list is forced
    for p in ("h", "a", "ɪ", " "):
        state = _walk(tf, vocab, [vocab.phone_id(p), vocab.duration_id(1)], state)
    assert tf.forced(state) == vocab.phones_end_id
    # the next unit: "the" is only a prefix of "the cat.", so the unit goes on
    state = _walk(tf, vocab, [vocab.phones_end_id], state)
    frame = [lo for lo, _ in vocab.slot_ranges]  # one frame of codec tokens
    for p in ("^", "h", "a", "ɪ", " "):
        state = _walk(tf, vocab, [vocab.phone_id(p), *frame], state)
    state = _walk(tf, vocab, [vocab.word_id, *ch("the")], state)
    row = tf.allowed(state)
    assert not _phones_of(row, vocab) and tf.forced(state) == ch(" ")[0]
    state = _walk(tf, vocab, ch(" cat."), state)
    assert _phones_of(tf.allowed(state), vocab) == {"ð"}
    # mid-sentence "hi": two variants, the LM picks; after "h" both "a" and "ɪ" are open
    state = _walk(tf, vocab, [*vocab.prompt_for("hi hi hi."), vocab.word_id, *ch("hi")])
    for p in ("^", "h", "a", "ɪ", " "):
        state = _walk(tf, vocab, [vocab.phone_id(p), vocab.duration_id(0)], state)
    state = _walk(tf, vocab, [vocab.phones_end_id, *(vocab.phone_id(p) for p in ("^", "h", "a", "ɪ", " "))], state)
    state = _walk(tf, vocab, [vocab.word_id, *ch("hi")], state)
    assert _phones_of(tf.allowed(state), vocab) == {"h"}
    state = _walk(tf, vocab, [vocab.phone_id("h"), vocab.duration_id(1)], state)
    row = tf.allowed(state)
    assert _phones_of(row, vocab) == {"a", "ɪ"} and not row[vocab.phones_end_id]
    # a word the lexicon lacks: the LM's own grapheme-to-phoneme step, any phone -- the same
    # grammar object serves every sentence, so nothing of "hi" may stick to this two-letter word
    state = _walk(tf, vocab, [*vocab.prompt_for("ha hi."), vocab.word_id, *ch("ha")])
    row = tf.allowed(state)
    assert _phones_of(row, vocab) == set(PHONES) and row[ch(" ")[0]]
    with pytest.raises(ValueError, match="phones layout"):
        TextFollowing(VoiceVocab(), lexicon=Lexicon.build(_sentences()))


def test_word_table_composes_the_units_the_corpus_never_heard(tmp_path):
    said = {"cat": "kˈæt", "hat": "hˈæt", "don't": "dˈoʊnt", "xyz": "ˈɛksw", "hey": "hˈeɪ  "}
    words = word_table(["Cat", "cat", "hat", "don't", "xyz", "hey", "two words", "k9", "-"], said.__getitem__,
                       {"k", "ˈ", "æ", "t", "h", "d", "o", "ʊ", "n", "e", "ɪ", " "}, progress=False)
    # lowercased and deduplicated; "xyz" has a symbol outside the inventory; non-words skipped
    assert words == {"cat": "kˈæt", "hat": "hˈæt", "don't": "dˈoʊnt", "hey": "hˈeɪ"}
    lex = Lexicon.build(_sentences())
    lex.words = words
    assert "hat" in lex and "hat?" in lex and "dog" not in lex and "the cat" not in lex
    assert lex.variants("hat", True, False) == [("^", "h", "ˈ", "æ", "t", " ")]
    assert lex.variants("hat,", False, False) == [("h", "ˈ", "æ", "t", ",", " ")]
    assert lex.variants("don't?", False, True) == [("d", "ˈ", "o", "ʊ", "n", "t", "?", "$")]
    # what the corpus heard wins at its place; elsewhere the word table's form for that place
    lex.words["hi"] = "hˈaɪ"
    assert lex.variants("hi", False, False)[0] == ("h", "a", "ɪ", " ")
    assert lex.variants("hi.", True, True) == [("^", "h", "a", "ɪ", ".", "$")]
    assert lex.variants("hi?", False, True) == [("h", "ˈ", "a", "ɪ", "?", "$")]
    lex.save(tmp_path / FILENAME)
    first = (tmp_path / WORDS_FILENAME).read_bytes()
    lex.save(tmp_path / FILENAME)
    assert (tmp_path / WORDS_FILENAME).read_bytes() == first  # same table, same bytes
    back = Lexicon.find(tmp_path)
    assert back.words == lex.words and back.entries == lex.entries
    # the grammar: a table word ends its unit at the word gap and its list is the composed one
    vocab = VoiceVocab(layout="phones", phones=(*PHONES, "ˈ", "?"))
    tf = TextFollowing(vocab, lexicon=back)
    ch = lambda s: vocab.text_ids(s, normalize=False)  # noqa: E731
    state = _walk(tf, vocab, [*vocab.prompt_for("hat hi."), vocab.word_id, *ch("hat")])
    assert tf.forced(state) == vocab.phone_id("^")
    state = _walk(tf, vocab, [vocab.phone_id("^"), vocab.duration_id(1)], state)
    for p in ("h", "ˈ", "æ", "t", " "):
        assert tf.forced(state) == vocab.phone_id(p)
        state = _walk(tf, vocab, [vocab.phone_id(p), vocab.duration_id(1)], state)
    assert tf.forced(state) == vocab.phones_end_id
    # a unit goes on past a word only into a key or a key's prefix: "hi there" is one, "hi hat." is not
    there = Lexicon.build([*_sentences(), (["hi there", "hat."], [["^", "h", "a", "ɪ", " ", "ð", "ə", " "],
                                                                  ["h", "æ", "t", ".", "$"]])])
    there.words = back.words
    tf = TextFollowing(vocab, lexicon=there)
    state = _walk(tf, vocab, [*vocab.prompt_for("hi hat."), vocab.word_id, *ch("hi")])
    assert tf.forced(state) == vocab.phone_id("^")  # must end: "hi hat." leads nowhere
    state = _walk(tf, vocab, [*vocab.prompt_for("hi there hat."), vocab.word_id, *ch("hi")])
    row = tf.allowed(state)  # both: end ("hi") or go on ("hi there")
    assert row[ch(" ")[0]] and _phones_of(row, vocab) == {"^"}
    # with the corpus lexicon kept as it is, --words adds the table (the teacher is monkeypatched away)
    target = build_model(PRESETS["tiny"][0], vocab, seed=3)
    target.save_pretrained(tmp_path / "t")
    Lexicon.build(_sentences()).save(tmp_path / "t" / FILENAME)
    (tmp_path / "list.txt").write_text("Hat\ncat\n")

    class Teacher:
        def __init__(self, **kw):
            pass

        phonemize_word = staticmethod(said.__getitem__)

    import voicestream.voice.corpus as corpus

    orig, corpus.PiperTeacher = corpus.PiperTeacher, Teacher
    try:
        lex2, path, what = build_for_target(None, tmp_path / "t", words=tmp_path / "list.txt", progress=False)
    finally:
        corpus.PiperTeacher = orig
    assert "3 unit texts kept; 2 words" in what and Lexicon.find(tmp_path / "t").words == {"cat": "kˈæt", "hat": "hˈæt"}
    assert Lexicon.find(tmp_path / "t").entries == Lexicon.build(_sentences()).entries
    from voicestream.voice.package import package_model

    package_model(tmp_path / "t", tmp_path / "shipped")  # the table travels with the weights
    assert Lexicon.find(tmp_path / "shipped").words == {"cat": "kˈæt", "hat": "hˈæt"}


def test_unit_edges_move_to_where_the_word_table_says_the_sounds_belong():
    words = {"i": "ˈaɪ", "booked": "bˈʊkt", "a": "ˈeɪ", "table": "tˈeɪbəl", "deferred": "dᵻfˈɜːd", "the": "ðə",
             "answer.": "x", "answer": "ˈænsɚ"}
    # the teacher's timing gave "booked" the article's sound and "answer." the article before it
    texts = ["i", "booked", "a table", "deferred the", "answer."]
    phones = [["^", "ˈ", "a", "ɪ", " "], ["b", "ˈ", "ʊ", "k", "t", "ɐ", " "], ["t", "ˈ", "e", "ɪ", "b", "ə", "l", " "],
              ["d", "ᵻ", "f", "ˈ", "ɜ", "ː", "d", " "], ["ð", "ɪ", "ʲ", " ", "ˈ", "æ", "n", "s", "ɚ", ".", "$"]]
    durations = [list(range(len(p))) for p in phones]
    got, frames = realign_units(texts, phones, durations, words)
    assert ["".join(p) for p in got] == ["^ˈaɪ ", "bˈʊkt ", "ɐtˈeɪbəl ", "dᵻfˈɜːdðɪʲ ", "ˈænsɚ.$"]
    # each sound keeps its own duration; the gap inside "ðɪʲ ˈænsɚ" is gone with the cut
    assert frames[1] == [0, 1, 2, 3, 4, 6] and frames[2] == [5, 0, 1, 2, 3, 4, 5, 6, 7]
    assert frames[3] == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 7] and frames[4] == [4, 5, 6, 7, 8, 9, 10]
    # a unit with a word the table lacks keeps its edges, and so do units that already fit
    same, _ = realign_units(["booked", "a tablet"], phones[1:3], durations[1:3], words)
    assert same == [phones[1], phones[2]]
    fine, _ = realign_units(texts[:2], phones[:2], durations[:2], words)
    assert fine == phones[:2]
    # the harvest: a lexicon built from realigned sentences plans "a table" with its article
    lex = Lexicon.build([(texts, got, frames)])
    assert lex.variants("booked", False, False) == [("b", "ˈ", "ʊ", "k", "t", " ")]
    assert lex.variants("a table", False, False)[0][:2] == ("ɐ", "t")


def test_a_unit_runs_on_only_into_a_lexicon_unit_that_fits_the_prompt():
    vocab = VoiceVocab(layout="phones", phones=PHONES)
    lex = Lexicon.build([*_sentences(), (["hi the hi."], [["^", "h", "a", "ɪ", " ", "ð", "ə", " ", "h", "a", "ɪ", ".", "$"]])])
    tf = TextFollowing(vocab, lexicon=lex)
    ch = lambda s: vocab.text_ids(s, normalize=False)  # noqa: E731
    # "hi the" is only a prefix of "hi the hi.", which this prompt does not hold: "hi" must end
    state = _walk(tf, vocab, [*vocab.prompt_for("hi the cat."), vocab.word_id, *ch("hi")])
    assert tf.forced(state) == vocab.phone_id("^")
    # here it does: end at "hi" or go on, the LM decides
    state = _walk(tf, vocab, [*vocab.prompt_for("hi the hi."), vocab.word_id, *ch("hi")])
    row = tf.allowed(state)
    assert row[ch(" ")[0]] and _phones_of(row, vocab) == {"^"}


def test_the_shipped_lexicon_knows_every_word_of_the_open_vocabulary_sentences():
    from voicestream.codec.eval_roundtrip import SENTENCES
    from voicestream.say import DEFAULT_VOICE_DIR
    from voicestream.text.normalize import normalize_text

    lex = Lexicon.find(DEFAULT_VOICE_DIR / "target")
    assert len(lex.words) > 50_000
    units = [(w, i == 0, i == len(ws) - 1) for s in SENTENCES for ws in [normalize_text(s).split()]
             for i, w in enumerate(ws)]
    missing = [w for w, first, last in units if not lex.variants(w, first, last)]
    assert not missing, missing
    vocab = VoiceVocab.from_dict(__import__("json").loads((DEFAULT_VOICE_DIR / "target" / "config.json").read_text())
                                 ["voicestream_vocab"])
    assert all(p in vocab.phones for w, f, l in units for v in lex.variants(w, f, l) for p in v)


def test_voice_with_a_lexicon_speaks_its_variants_and_speculation_stays_exact(tmp_path):
    pytest.importorskip("pycodec2")
    from voicestream.voice.synthesize import Voice

    vocab = VoiceVocab(layout="phones", phones=PHONES, durations=4)
    target = build_model(PRESETS["tiny"][0], vocab, seed=21)
    draft = build_model(PRESETS["tiny"][0], vocab, seed=22)
    with torch.no_grad():
        for a, b in zip(target.parameters(), draft.parameters()):
            b.copy_(a + 0.02 * torch.randn_like(a))
    lex = Lexicon.build(_sentences())
    text = "hi hi the cat."
    outs = {}
    for name, d, lx in (("plain", None, lex), ("spec", draft, lex), ("free", None, None)):
        voice = Voice(target, d, lexicon=lx)
        cfg = voice.spec_config.with_(max_new_tokens=voice.max_new_tokens_for(text))
        outs[name] = [t for c in voice.decoder.generate(vocab.prompt_for(text), cfg, constraint=voice.grammar)
                      for t in c.tokens]
        voice.close()
    assert outs["spec"] == outs["plain"]
    lists, in_list = [], False
    for t in outs["plain"]:
        if t == vocab.word_id:
            lists.append([])
        elif vocab.is_char(t) and not lists[-1]:
            in_list = True
        elif t == vocab.phones_end_id:
            in_list = False
        elif vocab.is_phone(t) and in_list:
            lists[-1].append(vocab.phones[t - vocab.phone_range[0]])
    assert [tuple(x) for x in lists] in (
        [("^", "h", "a", "ɪ", " "), v, ("ð", "ə", "k", "æ", "t", ".", "$")] for v in lex.variants("hi", False, False)
    )
    assert outs["free"] != outs["plain"]  # a random LM left alone does not say it that way
    # Voice.load finds the lexicon beside the target, unless told not to
    target.save_pretrained(tmp_path)
    lex.save(tmp_path / FILENAME)
    assert Voice.load(tmp_path).lexicon.entries == lex.entries
    assert Voice.load(tmp_path, plan="model").lexicon is None


def test_lexicon_durations_are_per_variant_medians_and_can_decide_the_plan(tmp_path):
    # "hi" mid-sentence said h-a-ɪ three times (1, 2, 3 frames on "a") and h-ɪ once
    timed = [
        (["hi", "hi."], [["^", "h", "a", "ɪ", " "], ["h", "a", "ɪ", ".", "$"]], [[1, 2, 1, 1, 1], [2, a, 2, 3, 0]])
        for a in (1, 2, 3)
    ] + [(["hi", "hi."], [["^", "h", "a", "ɪ", " "], ["h", "ɪ", ".", "$"]], [[1, 2, 1, 1, 1], [4, 4, 3, 0]])]
    lex = Lexicon.build(timed, min_share=0.2)
    assert lex.timed_variants("hi.", False, True) == [(("h", "a", "ɪ", ".", "$"), (2, 2, 2, 3, 0)),
                                                       (("h", "ɪ", ".", "$"), (4, 4, 3, 0))]
    lex.save(tmp_path / FILENAME)
    assert Lexicon.load(tmp_path / FILENAME).frames == lex.frames
    assert Lexicon.build(_sentences()).timed_variants("hi", True, False) == [(("^", "h", "a", "ɪ", " "), None)]
    with pytest.raises(ValueError, match="one duration per phone"):
        Lexicon.build([(["hi"], [["h", "a"]], [[1]])])

    vocab = VoiceVocab(layout="phones", phones=PHONES)
    ch = lambda s: vocab.text_ids(s, normalize=False)  # noqa: E731
    for durations in (False, True):
        tf = TextFollowing(vocab, lexicon=lex, lexicon_durations=durations)
        state = _walk(tf, vocab, [*vocab.prompt_for("hi hi."), vocab.word_id, *ch("hi")])
        state = _walk(tf, vocab, [vocab.phone_id("^")], state)
        assert tf.forced(state) == (vocab.duration_id(1) if durations else None)
        state = _walk(tf, vocab, [vocab.duration_id(1), vocab.phone_id("h")], state)
        assert tf.forced(state) == (vocab.duration_id(2) if durations else None)
    tf = TextFollowing(vocab, lexicon=lex, lexicon_durations=True)
    state = _walk(tf, vocab, [*vocab.prompt_for("hi hi."), vocab.word_id, *ch("hi"), vocab.phone_id("^")])
    for p, d in zip(("^", "h", "a", "ɪ", " "), (1, 2, 1, 1, 1)):
        if p != "^":
            state = _walk(tf, vocab, [vocab.phone_id(p)], state)
        state = _walk(tf, vocab, [tf.forced(state)], state)
        assert state.plist[-1] == (vocab.phone_id(p), d)
    frame = [lo for lo, _ in vocab.slot_ranges]
    state = _walk(tf, vocab, [vocab.phones_end_id], state)
    for p, d in zip(("^", "h", "a", "ɪ", " "), (1, 2, 1, 1, 1)):  # the audio follows the forced plan
        assert tf.forced(state) == vocab.phone_id(p)
        state = _walk(tf, vocab, [vocab.phone_id(p), *frame * d], state)
    # the second unit: the LM picks the variant; each phone then gets that variant's median
    state = _walk(tf, vocab, [vocab.word_id, *ch("hi.")], state)
    state = _walk(tf, vocab, [vocab.phone_id("h")], state)
    assert tf.forced(state) == vocab.duration_id(2)  # h-a-ɪ and h-ɪ disagree: the most frequent decides
    state = _walk(tf, vocab, [vocab.duration_id(2), vocab.phone_id("ɪ")], state)
    assert tf.forced(state) == vocab.duration_id(4)  # now only h-ɪ matches


def test_plan_resolution_and_the_say_cli(tmp_path, capsys):
    pytest.importorskip("pycodec2")
    from voicestream.cli import main as cli_main
    from voicestream.voice.lexicon import AUTO_PLAN, resolve_plan

    vocab = VoiceVocab(layout="phones", phones=PHONES, durations=4)
    bare, shipped = tmp_path / "bare", tmp_path / "shipped"
    for d in (bare, shipped):
        build_model(PRESETS["tiny"][0], vocab, seed=5).save_pretrained(d)
    lex = Lexicon.build([(t, p, [[1] * len(x) for x in p]) for t, p in _sentences()])
    lex.save(shipped / FILENAME)
    assert resolve_plan("model", shipped) == (None, False)
    assert resolve_plan("auto", bare) == (None, False)
    got, durations = resolve_plan("auto", shipped)
    assert got.entries == lex.entries and durations == (AUTO_PLAN == "lexicon-durations")
    assert resolve_plan("lexicon", shipped)[1] is False and resolve_plan("lexicon-durations", shipped)[1] is True
    with pytest.raises(FileNotFoundError, match="lexicon.json"):
        resolve_plan("lexicon", bare)
    with pytest.raises(ValueError, match="plan must be"):
        resolve_plan("dictionary", shipped)
    out = tmp_path / "hi.wav"
    args = ["say", "hi the cat.", "-o", str(out), "--no-draft", "--weights", "fp32", "--plan", "lexicon-durations"]
    assert cli_main([*args, "--target", str(shipped)]) == 0 and out.stat().st_size > 44
    assert "not in the pronunciation lexicon" not in capsys.readouterr().out  # "the cat." is one key
    assert cli_main(["say", "hi the dog, hi.", *args[2:], "--target", str(shipped)]) == 0
    assert "(the model guesses them from their letters): the, dog" in capsys.readouterr().out
    assert cli_main([*args, "--target", str(bare)]) == 2
    assert "lexicon.json" in capsys.readouterr().err
    # distill and eval acceptance decode a voice under the same plan (voice_of)
    from voicestream.distill import voice_of
    from voicestream.models import load_causal_lm

    model = load_causal_lm(shipped)
    assert voice_of(model, shipped)[1].lexicon.entries == lex.entries
    assert voice_of(model, shipped, "model")[1].lexicon is None and voice_of(model)[1].lexicon is None
    # serve takes the same --plan for each trained voice it loads
    from voicestream.cli import build_parser
    from voicestream.server.cli import load_voices

    for plan, has_lexicon in (("auto", True), ("model", False)):
        argv = ["serve", "--voice", f"v={shipped}", "--plan", plan, "--weights", "fp32"]
        (synth,) = load_voices(build_parser().parse_args(argv))
        assert (synth.voice.lexicon is not None) == has_lexicon
        synth.close()
