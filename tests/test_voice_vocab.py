"""Joint vocabulary layout, slot grammar and grammar-masked decoding."""

import numpy as np
import pytest
import torch

from voicestream.spec.runner import ModelRunner
from voicestream.voice.masking import GrammarMaskedLM, verify_masks
from voicestream.voice.presets import PRESETS, build_model
from voicestream.voice.vocab import GrammarError, GrammarState, VoiceVocab, codec2_spec


def random_tokens(vocab: VoiceVocab, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo = np.array([r[0] for r in vocab.slot_ranges])
    hi = np.array([r[1] for r in vocab.slot_ranges])
    return (lo + (rng.random((frames, len(lo))) * (hi - lo)).astype(np.int64)).reshape(-1)


def test_layout_is_disjoint_and_documented():
    v = VoiceVocab()
    spec = codec2_spec()
    assert v.codec_vocab_size == spec.vocab_size == 5376
    assert v.tokens_per_frame == 7
    assert v.slot_ranges == tuple(spec.slot_token_range(k) for k in range(7))
    specials = [v.bos_id, v.text_end_id, v.audio_start_id, v.audio_end_id, v.word_id, v.pad_id]
    assert len(set(specials)) == 6 and min(specials) >= v.char_range[1]
    assert v.char_range == (5376 + 3, 5376 + 37)
    assert v.vocab_size % 64 == 0 and v.vocab_size >= v.used_size
    assert VoiceVocab.from_dict(v.to_dict()) == v


@pytest.mark.parametrize("layout", ["plain", "words"])
def test_sequence_round_trip_is_exact(layout):
    v = VoiceVocab(layout=layout)
    text = "of the people, by the people; really?"
    units = ["of the", "people,", "by", "the people;", "really?"]
    frames = [2, 3, 1, 4, 2]
    toks = random_tokens(v, sum(frames), seed=3)
    seq = v.sequence(text, toks, frames, units)
    assert seq[: len(v.prompt_for(text))] == v.prompt_for(text)
    assert seq[-1] == v.audio_end_id
    got_text, got_toks = v.split_sequence(seq)
    assert got_text == text
    assert got_toks == toks.tolist()
    generated = seq[len(v.prompt_for(text)) :]
    assert v.codec_tokens_from_lm(generated) == toks.tolist()
    if layout == "words":
        assert seq.count(v.word_id) == len(units)
        assert v.text_from_ids(generated) == "".join(units)


def test_prompt_normalises_text():
    v = VoiceVocab()
    assert v.text_from_ids(v.prompt_for("Dr. Smith paid $5!")) == "doctor smith paid five dollars!"


def test_prompt_ends_an_unterminated_sentence():
    v = VoiceVocab()
    assert v.text_from_ids(v.prompt_for("Hello there")) == "hello there."  # the voice learned whole sentences
    assert v.text_from_ids(v.prompt_for("Call me at 5  ")) == "call me at five."
    for done in ("Hello there?", "well,", "Stop!"):
        assert v.text_from_ids(v.prompt_for(done)) == done.lower()
    assert v.prompt_for("hello", normalize=False) == [v.bos_id, *v.text_ids("hello", normalize=False),
                                                      v.text_end_id, v.audio_start_id]  # training sequences: as given


@pytest.mark.parametrize("layout", ["plain", "words"])
def test_slot_masks_admit_exactly_the_valid_sequence(layout):
    v = VoiceVocab(layout=layout)
    units, frames = ["hello,", "world."], [3, 2]
    seq = v.sequence("hello, world.", random_tokens(v, 5, seed=1), frames, units)
    g = v.grammar
    masks = g.masks(seq)
    start = v.audio_start_index(seq)
    for i in range(start, len(seq) - 1):
        assert masks[i, seq[i + 1]], f"token {seq[i + 1]} at {i + 1} masked out"
    # inside a frame exactly one codebook is legal
    states = g.states(seq)
    for i in range(start, len(seq) - 1):
        s = int(states[i])
        if s >= GrammarState.SLOT:
            lo, hi = v.slot_ranges[s - GrammarState.SLOT]
            row = masks[i]
            assert row[lo:hi].all() and int(row.sum()) == hi - lo
    frame_rows = [i for i in range(start, len(seq)) if states[i] == GrammarState.FRAME]
    assert frame_rows
    row = masks[frame_rows[0]]
    lo0, hi0 = v.slot_ranges[0]
    expected = (hi0 - lo0) + 1 + (layout == "words")
    assert int(row.sum()) == expected and row[v.audio_end_id]
    assert bool(row[v.word_id]) == (layout == "words")
    assert not masks[:, v.pad_id].any()
    assert not masks[:, v.used_size :].any()


def test_grammar_rejects_illegal_tokens():
    v = VoiceVocab()
    g = v.grammar
    s = g.run(v.prompt_for("hi."))
    assert s == GrammarState.UNIT_START
    with pytest.raises(GrammarError):
        g.step(s, 5)  # a codec token before any <word>
    s = g.run([v.word_id, *v.text_ids("hi."), 5], state=s)  # slot-0 code -> before slot 1
    assert s == GrammarState.SLOT + 1
    with pytest.raises(GrammarError):
        g.step(s, 5)  # slot-0 code where slot 1 is due
    assert g.step(s, 5, strict=False) >= GrammarState.SLOT


def test_verify_masks_match_grammar():
    v = VoiceVocab()
    seq = v.sequence("a b.", random_tokens(v, 2), [1, 1], ["a", "b."])
    committed, chunk = seq[:20], seq[20:26]
    rows = verify_masks(v, committed, chunk)
    assert rows.shape == (len(chunk) + 1, v.vocab_size)
    full = v.grammar.masks(seq)
    assert torch.equal(rows, full[19:26])


def test_grammar_masked_lm_masks_every_row_across_rollbacks():
    v = VoiceVocab()
    model = build_model(PRESETS["tiny"][0], v, seed=0).eval()
    wrapped = GrammarMaskedLM(model, v)
    seq = v.sequence("hi there.", random_tokens(v, 3, seed=2), [1, 2], ["hi", "there."])
    expected = v.grammar.masks(seq)
    runner = ModelRunner(wrapped)
    with torch.inference_mode():
        last = runner.prefill(seq[:16])
        assert torch.equal(torch.isfinite(last), expected[15])
        rows = runner.extend(seq[16:24])
        assert torch.equal(torch.isfinite(rows), expected[16:24])
        runner.rollback(18)  # a rejected draft: cache cropped, history must follow
        rows = runner.extend(seq[18:30])
        assert torch.equal(torch.isfinite(rows), expected[18:30])


def test_masked_greedy_generation_is_always_legal():
    from voicestream.config import SamplingConfig, SpecConfig
    from voicestream.spec.decoder import SpeculativeDecoder

    v = VoiceVocab()
    target = GrammarMaskedLM(build_model(PRESETS["tiny"][0], v, seed=3), v)
    draft = GrammarMaskedLM(build_model(PRESETS["tiny"][0], v, seed=4), v)
    prompt = v.prompt_for("go.")
    for rule, temp in (("greedy", 0.0), ("sampling", 1.0)):
        cfg = SpecConfig(rule=rule, sampling=SamplingConfig(temperature=temp), max_new_tokens=120,
                         stop_ids=(v.audio_end_id,), seed=1)
        out = [t for c in SpeculativeDecoder(target, draft).generate(prompt, cfg) for t in c.tokens]
        v.grammar.run(prompt + out)  # strict: raises on any illegal token


def test_text_following_admits_the_reference_and_stops_after_the_text():
    from voicestream.config import SamplingConfig, SpecConfig
    from voicestream.spec.decoder import SpeculativeDecoder
    from voicestream.voice.masking import TextFollowing

    v = VoiceVocab()
    tf = TextFollowing(v, max_unit_frames=3)
    text = "of the cats, one slept."
    units, frames = ["of the", "cats,", "one", "slept."], [2, 3, 1, 2]
    seq = v.sequence(text, random_tokens(v, 8, seed=4), frames, units)
    state = tf.initial()
    for i, t in enumerate(seq):
        if i > v.audio_start_index(seq):
            assert tf.allowed(state)[t], f"reference token {t} at {i} rejected"
        state = tf.step(state, t)
    # inside a word only the next prompt character is legal; a unit may not end mid-word
    state = tf.initial()
    for t in [*v.prompt_for(text), v.word_id, *v.text_ids("o", normalize=False)]:
        state = tf.step(state, t)
    row = tf.allowed(state)
    assert int(row.sum()) == 1 and row[v.text_ids("f", normalize=False)[0]]
    state = tf.step(state, v.text_ids("f", normalize=False)[0])  # "of|": space (merge) or a frame
    row = tf.allowed(state)
    lo0, hi0 = v.slot_ranges[0]
    assert int(row.sum()) == 1 + (hi0 - lo0) and row[v.text_ids(" ", normalize=False)[0]]
    # random models under the grammar speak the whole text exactly once, then stop
    for seed in (5, 6):
        target = GrammarMaskedLM(build_model(PRESETS["tiny"][0], v, seed=seed), v, tf)
        draft = GrammarMaskedLM(build_model(PRESETS["tiny"][0], v, seed=seed + 10), v, tf)
        cfg = SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=1.0), max_new_tokens=2000,
                         stop_ids=(v.audio_end_id,), seed=seed)
        chunks = list(SpeculativeDecoder(target, draft).generate(v.prompt_for(text), cfg))
        out = [t for c in chunks for t in c.tokens]
        assert chunks[-1].finish_reason == "stop"
        copied = v.text_from_ids(out)
        assert copied.replace(" ", "") == text.replace(" ", "")
        v.grammar.run(v.prompt_for(text) + out)
