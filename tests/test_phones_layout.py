"""The phones layout: teacher phone timing between frames, its grammar, warm start, training."""

import numpy as np
import pytest
import torch

from voicestream.config import SamplingConfig, SpecConfig
from voicestream.models import load_causal_lm
from voicestream.spec.decoder import SpeculativeDecoder
from voicestream.voice.masking import TextFollowing
from voicestream.voice.phones import PHONES, phone_inventory, teacher_sample_rate, unit_phones
from voicestream.voice.presets import PRESETS, build_model, warm_start
from voicestream.voice.vocab import GrammarError, GrammarState, VoiceVocab

from test_voice_vocab import random_tokens

SR = 1000  # toy teacher rate: 20 samples = one 50 Hz frame


def test_phones_start_each_unit_and_sit_at_their_rounded_frames():
    # "^" 1 frame, "h" 2, "i" 1, " " 1 | "j" 1 (rounded from 1.4), "o" 2.6, "$" 1 -> frames 5 | 5
    alignment = [("^", 20), ("h", 40), ("i", 20), (" ", 20), ("j", 28), ("o", 52), ("$", 20)]
    got = unit_phones(alignment, SR, 50.0, [5, 5])
    assert got == [[("^", 0), ("h", 1), ("i", 3), (" ", 4)], [("j", 0), ("o", 1), ("$", 4)]]
    # a unit edge the rounding left without a starting phone repeats the sounding one
    got = unit_phones([("^", 20), ("a", 100), ("$", 20)], SR, 50.0, [3, 4])
    assert got == [[("^", 0), ("a", 1)], [("a", 0), ("$", 3)]]
    # a phone starting after the last frame goes to the last unit's end
    got = unit_phones([("a", 40), ("$", 0)], SR, 50.0, [2])
    assert got == [[("a", 0), ("$", 2)]]
    assert teacher_sample_rate([("a", 22050)], 1.0005) == 22050
    assert phone_inventory([[("a", 1), ("q", 1)], [("ʁ", 2)]])[: len(PHONES)] == PHONES
    assert phone_inventory([[("a", 1), ("q", 1)], [("ʁ", 2)]])[len(PHONES) :] == ("q", "ʁ")


def _phones_sequence(v: VoiceVocab, seed: int = 0):
    text = "of the cats, one slept."
    units, frames = ["of the", "cats,", "one", "slept."], [3, 4, 2, 3]
    phones = [[("^", 0), ("ʌ", 0), ("v", 1), ("ð", 2)], [("k", 0), ("æ", 1), ("t", 2), ("s", 3), (",", 4)],
              [("w", 0), ("ʌ", 1)], [("s", 0), ("l", 1), ("ɛ", 2), (".", 3), ("$", 3)]]
    toks = random_tokens(v, sum(frames), seed=seed)
    return text, units, frames, phones, toks


def test_phones_sequence_round_trips_and_obeys_the_grammar():
    v = VoiceVocab(layout="phones")
    assert v.phones == PHONES and v.phone_range == (v.pad_id + 1, v.pad_id + 1 + len(PHONES))
    assert v.phones_end_id == v.phone_range[1] and not v.is_phone(v.phones_end_id)
    assert v.duration_range == (v.phones_end_id + 1, v.phones_end_id + 1 + v.durations)
    assert v.vocab_size % 64 == 0 and v.vocab_size >= v.used_size == v.duration_range[1]
    assert VoiceVocab.from_dict(v.to_dict()) == v
    words = VoiceVocab()
    for attr in ("bos_id", "word_id", "pad_id", "audio_end_id", "char_range"):  # ids shared with "words"
        assert getattr(v, attr) == getattr(words, attr)
    text, units, frames, phones, toks = _phones_sequence(v)
    seq = v.sequence(text, toks, frames, units, phones)
    generated = seq[len(v.prompt_for(text)) :]
    assert v.codec_tokens_from_lm(generated) == toks.tolist()
    assert v.text_from_ids(generated) == "".join(units)
    assert generated.count(v.phones_end_id) == len(units)
    # per unit: letters, the phone list, <phones_end>, then each phone right before the frame it starts in
    lists, placed, offsets, n_frames, in_list = [], [], [], 0, False
    for t in generated:
        if t == v.word_id:
            lists.append([])
            placed.append([])
            offsets.append([])
            unit_start = n_frames
        elif v.is_char(t):
            in_list = True
        elif t == v.phones_end_id:
            in_list = False
        elif v.is_phone(t):
            sym = v.phones[t - v.phone_range[0]]
            (lists if in_list else placed)[-1].append(sym)
            if not in_list:
                offsets[-1].append(n_frames - unit_start)
        elif v.slot_ranges[0][0] <= t < v.slot_ranges[0][1]:
            n_frames += 1
    assert lists == placed == [[p for p, _ in u] for u in phones]
    assert offsets == [[off for _, off in u] for u in phones]
    durs = [t - v.duration_range[0] for t in generated if v.is_duration(t)]
    want = [e - off for u, nf in zip(phones, frames) for (_, off), e in zip(u, [o for _, o in u[1:]] + [nf])]
    assert durs == want and sum(durs) == sum(frames)
    states = v.grammar.states(seq)  # strict: every token is legal
    masks = v.grammar.masks(seq)
    lo0, hi0 = v.slot_ranges[0]
    plo, phi = v.phone_range
    for i, s in enumerate(states[:-1]):
        if s == GrammarState.UNIT_CHARS and v.is_phone(seq[i + 1]):  # letters end: a phone, never a frame
            assert masks[i, plo:phi].all() and not masks[i, lo0:hi0].any()
        if s == GrammarState.UNIT_AUDIO:  # after <phones_end>: a phone, never a frame
            assert v.is_phone(seq[i + 1]) and not masks[i, lo0:hi0].any()
        if s == GrammarState.UNIT_DUR:  # after a listed phone: only its duration
            assert v.is_duration(seq[i + 1]) and int(masks[i].sum()) == v.durations
    frame_row = masks[[i for i, s in enumerate(states) if s == GrammarState.FRAME][0]]
    assert frame_row[plo:phi].all() and frame_row[lo0:hi0].all() and frame_row[v.word_id]
    g = v.grammar
    s = g.run([*v.prompt_for("hi."), v.word_id, *v.text_ids("hi.", normalize=False)])
    with pytest.raises(GrammarError):
        g.step(s, lo0)  # a frame straight after the letters
    with pytest.raises(ValueError, match="offset 0"):
        v.sequence(text, toks, frames, units, [[("k", 1)], *phones[1:]])
    with pytest.raises(ValueError, match="unit_phones"):
        v.sequence(text, toks, frames, units)
    short = VoiceVocab(layout="phones", durations=4)
    assert not short.is_duration(short.duration_range[0] + 4)
    with pytest.raises(ValueError, match="outside"):  # /k/ lasting all 4 frames of "cats," needs duration 4
        short.sequence(text, toks, frames, units, [*phones[:1], [("k", 0)], *phones[2:]])
    with pytest.raises(ValueError, match="only used by the phones layout"):
        VoiceVocab(layout="words", phones=("a",))


def test_text_following_in_the_phones_layout_follows_the_listed_phones_and_durations():
    v = VoiceVocab(layout="phones")
    text, units, frames, phones, toks = _phones_sequence(v, seed=1)
    seq = v.sequence(text, toks, frames, units, phones)
    loose = TextFollowing(v)
    state = loose.initial()
    for i, t in enumerate(seq):
        if i > v.audio_start_index(seq):
            assert loose.allowed(state)[t], f"reference token {t} at {i} rejected"
        state = loose.step(state, t)
    tf = TextFollowing(v, max_unit_phones=2)
    plo, phi = v.phone_range
    dlo, dhi = v.duration_range
    lo0, hi0 = v.slot_ranges[0]
    k, a = v.phone_id("k"), v.phone_id("æ")
    state = tf.initial()
    for tok in [*v.prompt_for("cat sat."), v.word_id, *v.text_ids("cat", normalize=False)]:
        state = tf.step(state, tok)
    row = tf.allowed(state)  # end of a word: the next letter (space) or the phone list, never a frame
    assert row[plo:phi].all() and not row[lo0:hi0].any() and not row[v.phones_end_id]
    state = tf.step(state, k)
    row = tf.allowed(state)  # a listed phone: its duration, nothing else
    assert row[dlo:dhi].all() and int(row.sum()) == v.durations
    state = tf.step(state, v.duration_id(2))
    row = tf.allowed(state)  # in the list: another phone or its end
    assert row[plo:phi].all() and row[v.phones_end_id] and not row[lo0:hi0].any()
    state = tf.step(state, a)
    state = tf.step(state, v.duration_id(0))  # a 0-frame phone
    assert tf.forced(state) == v.phones_end_id  # the list is at its cap of 2
    state = tf.step(state, v.phones_end_id)
    # the audio follows the list: /k/ forced, exactly 2 free frames, /æ/ forced at once, then <word>
    assert tf.forced(state) == k
    state = tf.step(state, k)
    for f in range(2):
        row = tf.allowed(state)
        assert tf.forced(state) is None and row[lo0:hi0].all() and int(row.sum()) == hi0 - lo0
        for tok in [int(x) for x in random_tokens(v, 1, seed=f)]:
            state = tf.step(state, tok)
    assert tf.forced(state) == a
    state = tf.step(state, a)
    assert tf.forced(state) == v.word_id  # all placed, text remains
    # random models under the grammar speak the text once, place their phones, and stop
    v = VoiceVocab(layout="phones", durations=4)  # short phones keep the random utterance short
    tiny = PRESETS["tiny"][0]
    target, draft = build_model(tiny, v, seed=7), build_model(tiny, v, seed=8)
    cfg = SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=1.0), max_new_tokens=1500,
                     stop_ids=(v.audio_end_id,), seed=3)
    capped = TextFollowing(v, max_unit_phones=3)
    chunks = list(SpeculativeDecoder(target, draft).generate(v.prompt_for(text), cfg, constraint=capped))
    out = [t for c in chunks for t in c.tokens]
    assert chunks[-1].finish_reason == "stop"
    assert v.text_from_ids(out).replace(" ", "") == text.replace(" ", "")
    v.grammar.run(v.prompt_for(text) + out)
    unit_lists, unit_placed, in_list = [], [], False
    for t in out:
        if t == v.word_id:
            unit_lists.append([])
            unit_placed.append([])
        elif v.is_char(t):
            in_list = True
        elif t == v.phones_end_id:
            in_list = False
        elif v.is_phone(t):
            (unit_lists if in_list else unit_placed)[-1].append([t, 0])
        elif v.is_duration(t):
            unit_lists[-1][-1][1] = t - v.duration_range[0]
        elif v.slot_ranges[0][0] <= t < v.slot_ranges[0][1]:
            unit_placed[-1][-1][1] += 1  # frames of the phone last placed
    assert unit_lists == unit_placed and all(unit_lists)  # same phones, each with exactly its frames


def test_warm_start_keeps_shared_rows_and_loads_back(tmp_path):
    words = VoiceVocab()
    model = build_model(PRESETS["tiny"][0], words, seed=0)
    before_emb = model.get_input_embeddings().weight.detach().clone()
    before_head = model.get_output_embeddings().weight.detach().clone()
    phones = VoiceVocab(layout="phones")
    warm_start(model, phones, seed=0)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == head.shape[0] == phones.vocab_size == model.config.vocab_size
    assert torch.equal(emb[: words.pad_id + 1], before_emb[: words.pad_id + 1])
    assert torch.equal(head[: words.pad_id + 1], before_head[: words.pad_id + 1])
    plo, phi = phones.phone_range
    assert not torch.allclose(emb[plo], emb[plo + 1])  # phones start distinguishable
    model.save_pretrained(tmp_path)
    back = load_causal_lm(tmp_path)
    assert VoiceVocab.from_dict(back.config.voicestream_vocab) == phones
    assert torch.equal(back.get_input_embeddings().weight, emb)
    with pytest.raises(ValueError, match="share ids"):
        warm_start(build_model(PRESETS["tiny"][0], words), VoiceVocab(layout="phones", pad_to_multiple=64,
                                                                      codec_vocab_size=64, tokens_per_frame=1,
                                                                      slot_ranges=((0, 64),)))


def test_phones_training_from_a_words_checkpoint(tmp_path):
    pytest.importorskip("pycodec2")
    import csv

    from voicestream.voice.corpus import CorpusConfig, SyntheticTeacher, build_corpus
    from voicestream.voice.synthesize import Voice
    from voicestream.voice.train import make_trainer

    corpus = tmp_path / "corpus"
    build_corpus(corpus, CorpusConfig(n=6, heldout=1, shard_size=8, seed=2), teacher=SyntheticTeacher(), progress=False)
    quiet = {"progress": False, "threads": 1, "ckpt_minutes": 60.0, "eval_batches": 1}
    words, _ = make_trainer(corpus, tmp_path / "words", preset_name="tiny", loop_overrides={**quiet, "max_steps": 2})
    words.run()
    trainer, summary = make_trainer(corpus, tmp_path / "phones", preset_name="tiny", layout="phones",
                                    init_from=tmp_path / "words" / "model", loop_overrides={**quiet, "max_steps": 12})
    assert summary["layout"] == "phones" and summary["train_examples"]["kept"] == 5
    vocab = VoiceVocab.from_dict(trainer.model.config.voicestream_vocab)
    assert set("abcdefghijklmnopqrstuvwxyz").issuperset(set(vocab.phones[len(PHONES) :]))  # the toy teacher's letters
    trainer.run()
    with open(tmp_path / "phones" / "log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])
    voice = Voice.load(tmp_path / "phones" / "model")
    assert voice.vocab.layout == "phones"
    res = voice.synthesize("a cat.", voice.spec_config.with_(max_new_tokens=400))
    assert res.audio.size > 0 and res.stats.finish_reason in ("stop", "length")
    voice.close()
    # a phones draft distilled from the phones target, warm-started from the words model
    from voicestream.voice.distill import make_distiller

    dist, _, dvocab, _ = make_distiller(tmp_path / "phones" / "model", corpus, tmp_path / "draft", preset_name="tiny",
                                        init_from=tmp_path / "words" / "model",
                                        loop_overrides={**quiet, "max_steps": 2})
    words_emb = load_causal_lm(tmp_path / "words" / "model").get_input_embeddings().weight
    draft_emb = dist.model.get_input_embeddings().weight
    assert dvocab.layout == "phones" and draft_emb.shape[0] == dvocab.vocab_size
    assert torch.equal(draft_emb[: dvocab.pad_id].detach(), words_emb[: dvocab.pad_id].detach())  # shared ids
    assert dist.cfg.extra["init_from"] == str(tmp_path / "words" / "model")
    dist.run()


def _first_phone_list(v: VoiceVocab, out: list[int]) -> list[int]:
    start = next(i for i, t in enumerate(out) if v.is_phone(t))
    return out[start : out.index(v.phones_end_id)]


def test_greedy_plan_samples_the_sound_but_not_the_phone_list():
    v = VoiceVocab(layout="phones", durations=4)
    tf, loose = TextFollowing(v, max_unit_phones=3), TextFollowing(v, max_unit_phones=3, greedy_plan=False)
    assert not TextFollowing(VoiceVocab(layout="words")).greedy(tf.initial())
    state, flags = tf.initial(), []
    seq = [*v.prompt_for("cat."), v.word_id, *v.text_ids("cat.", normalize=False), v.phone_id("k"),
           v.duration_id(1), v.phones_end_id, v.phone_id("k")]
    for t in seq:
        state = tf.step(state, t)
        flags.append(tf.greedy(state) and not loose.greedy(state))
    n_prompt = len(v.prompt_for("cat."))
    # greedy: in the word's letters (the first phone is chosen there), after a phone, after a duration
    assert flags[n_prompt:] == [False, True, True, True, True, True, True, False, False]
    tiny = PRESETS["tiny"][0]
    target, draft = build_model(tiny, v, seed=7), build_model(tiny, v, seed=8)
    dec = SpeculativeDecoder(target, draft)
    prompt = v.prompt_for("cat sat.")
    cfg = SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=1.5), max_new_tokens=60,
                     stop_ids=(v.audio_end_id,))
    greedy = [t for c in dec.generate(prompt, SpecConfig(max_new_tokens=60), constraint=tf) for t in c.tokens]

    def run(grammar, seed):
        return [t for c in dec.generate(prompt, cfg.with_(seed=seed), constraint=grammar) for t in c.tokens]

    planned = [run(tf, s) for s in range(4)]
    assert {tuple(_first_phone_list(v, o)) for o in planned} == {tuple(_first_phone_list(v, greedy))}
    assert len({tuple(o) for o in planned}) > 1  # the sound is still sampled
    assert len({tuple(_first_phone_list(v, run(loose, s))) for s in range(4)}) > 1
    dec.close()


def test_continuing_a_phones_voice_keeps_its_phone_ids(tmp_path, capsys):
    """A corpus with phones the checkpoint lacks must not shift its duration ids: the
    sentences using them are left out and the checkpoint's phone list is kept."""
    pytest.importorskip("pycodec2")
    from voicestream.voice.corpus import CorpusConfig, SyntheticTeacher, build_corpus
    from voicestream.voice.shards import Corpus
    from voicestream.voice.train import make_trainer

    small, big = tmp_path / "small", tmp_path / "big"
    build_corpus(small, CorpusConfig(n=2, heldout=1, shard_size=8, seed=2), teacher=SyntheticTeacher(), progress=False)
    build_corpus(big, CorpusConfig(n=8, heldout=1, shard_size=8, seed=6), teacher=SyntheticTeacher(), progress=False)
    quiet = {"progress": False, "threads": 1, "ckpt_minutes": 60.0, "eval_batches": 1}
    first, _ = make_trainer(small, tmp_path / "first", preset_name="tiny", layout="phones",
                            loop_overrides={**quiet, "max_steps": 1})
    first.run()
    known = VoiceVocab.from_dict(first.model.config.voicestream_vocab).phones
    utts = Corpus(big).utterances("train")
    fits = [u for u in utts if {p for p, _ in u.meta["phonemes"]} <= set(known)]
    assert 0 < len(fits) < len(utts)  # the toy teacher's letters: some sentences use new ones
    nxt, summary = make_trainer(big, tmp_path / "next", preset_name="tiny", layout="phones",
                                init_from=tmp_path / "first" / "model", loop_overrides={**quiet, "max_steps": 1})
    assert VoiceVocab.from_dict(nxt.model.config.voicestream_vocab).phones == known
    ex = summary["train_examples"]
    assert ex["kept"] + ex["skipped_too_long"] + ex["skipped_no_units"] == len(fits) and ex["kept"] > 0
    assert f"{len(utts) - len(fits)} of {len(utts)} sentences use phones the model lacks" in capsys.readouterr().out
