"""Field-wise median decoding of ordinal codec fields: the rule itself, where a voice's
grammar applies it, and that speculation with it stays exact on a voice LM."""
import itertools

import numpy as np
import pytest
import torch

from voicestream.spec.field_median import FieldMedian
from voicestream.voice.masking import TextFollowing
from voicestream.voice.presets import PRESETS, build_model
from voicestream.voice.vocab import GrammarState, VoiceVocab, codec2_spec


def _brute_median(p: np.ndarray, bits: tuple[int, ...]) -> int:
    """Field by field, the smallest value whose cumulative (conditional) mass reaches half."""
    p = p.reshape([1 << b for b in bits])
    code = 0
    for j, b in enumerate(bits):
        marg = p.reshape(1 << b, -1).sum(1)
        v = int(np.argmax(np.cumsum(marg) >= 0.5 * marg.sum()))
        code = (code << b) | v
        p = p[v]
    return code


def test_single_field_median_is_not_the_argmax():
    probs = torch.tensor([0.3, 0.1, 0.2, 0.4])
    logits = torch.cat([torch.full((3,), -5.0), probs.log()])  # the codebook sits at offset 3
    assert FieldMedian((2,), 3)(logits) == 3 + 2  # cdf .3 .4 .6: median 2, argmax 3
    assert FieldMedian((2,), 3)(torch.cat([torch.zeros(3), torch.tensor([9.0, 0, 0, 0])])) == 3


@pytest.mark.parametrize("bits", [(1, 1, 5), (5, 5), (7,), (2, 3)])
def test_multi_field_median_matches_a_brute_force_reference(bits):
    rng = np.random.default_rng(sum(bits))
    size = 1 << sum(bits)
    for _ in range(20):
        p = rng.dirichlet(np.full(size, 0.3))
        logits = torch.tensor(np.log(p + 1e-30), dtype=torch.float32)
        assert FieldMedian(bits, 0)(logits) == _brute_median(p, bits)


def test_field_median_rejects_bad_widths():
    for bits in ((), (0, 3), (-1,)):
        with pytest.raises(ValueError):
            FieldMedian(bits, 0)


def test_text_following_picks_the_median_only_where_one_codebook_is_legal():
    spec = codec2_spec()
    vocab = VoiceVocab()  # words layout
    tf = TextFollowing(vocab, slot_fields=spec.ordinal_fields)
    state = tf.initial()
    for t in vocab.prompt_for("hi."):
        state = tf.step(state, t)
    assert tf.pick(state) is None  # <word> next: not a codec row
    for t in (vocab.word_id, *vocab.text_ids("hi.", normalize=False)):
        state = tf.step(state, t)
    assert tf.pick(state).offset == 0  # the unit's letters are done: only a first frame is legal
    for k in range(vocab.tokens_per_frame):
        lo, _ = vocab.slot_ranges[k]
        state = tf.step(state, lo)
        if k + 1 < vocab.tokens_per_frame:
            pick = tf.pick(state)
            assert state.g == GrammarState.SLOT + k + 1
            assert pick.offset == vocab.slot_ranges[k + 1][0] and pick.bits == spec.ordinal_fields[k + 1]
    assert state.g == GrammarState.FRAME and tf.allowed(state)[vocab.audio_end_id]
    assert tf.pick(state) is None  # slot 0 competes with <audio_end> here: the request decides
    assert TextFollowing(vocab).pick(tf.initial()) is None  # without slot_fields: never
    with pytest.raises(ValueError):
        TextFollowing(vocab, slot_fields=spec.ordinal_fields[:3])


@pytest.fixture(scope="module")
def phones_pair():
    vocab = VoiceVocab(layout="phones", phones=("h", "a", "ɪ", " "))
    target = build_model(PRESETS["tiny"][0], vocab, seed=21)
    draft = build_model(PRESETS["tiny"][0], vocab, seed=22)
    with torch.no_grad():  # let target and draft agree often enough for chunks to be accepted
        for (_, a), (_, b) in zip(target.named_parameters(), draft.named_parameters()):
            b.copy_(a + 0.02 * torch.randn_like(a))
    return target, draft


def test_voice_median_decoding_is_exact_under_speculation_and_differs_from_argmax(phones_pair):
    pytest.importorskip("pycodec2")
    from voicestream.spec.stats import GenerationStats
    from voicestream.voice.synthesize import Voice

    target, draft = phones_pair
    text = "hi hi."
    outs = {}
    for name, d, pick in (("plain", None, "median"), ("spec", draft, "median"), ("argmax", None, "model")):
        voice = Voice(target, d, codec_pick=pick)
        cfg = voice.spec_config.with_(max_new_tokens=voice.max_new_tokens_for(text))
        st = GenerationStats()
        prompt = voice.vocab.prompt_for(text)
        outs[name] = ([t for c in voice.decoder.generate(prompt, cfg, stats=st, constraint=voice.grammar)
                       for t in c.tokens], st, voice)
    (plain, st_plain, voice), (spec, st_spec, _), (argmax, _, _) = outs["plain"], outs["spec"], outs["argmax"]
    assert spec == plain and st_spec.target_forwards < st_plain.target_forwards
    assert plain != argmax
    # every codec token in a one-codebook row is the median of the target's distribution there
    vocab = voice.vocab
    prompt = vocab.prompt_for(text)
    with torch.no_grad():
        logits = target(torch.tensor([prompt + plain[:-1]])).logits[0, len(prompt) - 1 :]
    state, checked = voice.grammar.initial(), 0
    for t in prompt:
        state = voice.grammar.step(state, t)
    for i, t in enumerate(plain):
        pick = voice.grammar.pick(state)
        if pick is not None:
            row = logits[i].masked_fill(~voice.grammar.allowed(state), float("-inf"))
            assert t == pick(row), i
            checked += 1
        state = voice.grammar.step(state, t)
    assert checked > 20
    for _, _, v in outs.values():
        v.close()


def test_codec_pick_needs_an_ordinal_codec_and_text_following(phones_pair):
    pytest.importorskip("pycodec2")
    from voicestream.voice.synthesize import Voice

    target, _ = phones_pair
    with pytest.raises(ValueError, match="codec_pick"):
        Voice(target, None, codec_pick="mode")
    with pytest.raises(ValueError, match="follow_text"):
        Voice(target, None, codec_pick="median", follow_text=False)
    assert all(1 << sum(f) == n for f, n in itertools.zip_longest(codec2_spec().ordinal_fields,
                                                                  codec2_spec().codebook_sizes))
