"""Slot-restricted training logits equal the full masked softmax they replace."""
import numpy as np
import torch
import torch.nn.functional as F

from voicestream.voice.data import collate, encode_utterance, masked_logits
from voicestream.voice.distill import distill_loss
from voicestream.voice.presets import PRESETS, build_model
from voicestream.voice.shards import Utterance
from voicestream.voice.train import grammar_loss
from voicestream.voice.vocab import VoiceVocab


def _batch(vocab: VoiceVocab) -> dict:
    rng = np.random.default_rng(0)
    utts = []
    for i, (text, frames) in enumerate([("hi there.", [2, 3]), ("one two three!", [1, 2, 4])]):
        toks = np.concatenate([[rng.integers(lo, hi) for lo, hi in vocab.slot_ranges] for _ in range(sum(frames))])
        utts.append(Utterance(f"u{i}", text, text, toks, text.split(), frames))
    return collate([encode_utterance(vocab, u, text_weight=0.1) for u in utts], vocab.pad_id)


def test_grammar_loss_equals_the_full_masked_softmax_and_its_gradient():
    vocab = VoiceVocab()
    model = build_model(PRESETS["tiny"][0], vocab, seed=1).double()
    batch = _batch(vocab)
    loss, metrics = grammar_loss(vocab)(model, batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = masked_logits(out[:, :-1], batch["states"][:, :-1], vocab.grammar.allowed)
    nll = F.cross_entropy(logits.transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
    w = batch["weights"][:, 1:]
    ref = (nll * w).sum() / w.sum()
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    assert torch.allclose(loss.double(), ref, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g.double(), r, rtol=1e-4, atol=1e-8)
    assert metrics["audio_nll"] > 0 and metrics["text_nll"] > 0


def test_distill_loss_is_zero_for_a_copy_of_the_target_and_matches_the_masked_kl():
    vocab = VoiceVocab()
    target = build_model(PRESETS["tiny"][0], vocab, seed=1).double()
    batch = _batch(vocab)
    same = build_model(PRESETS["tiny"][0], vocab, seed=1).double()
    loss, m = distill_loss(target, vocab)(same, batch)
    assert abs(float(loss)) < 1e-10 and m["argmax_agree"] == 1.0

    draft = build_model(PRESETS["tiny"][0], vocab, seed=2).double()
    loss, m = distill_loss(target, vocab, temperature=2.0)(draft, batch)
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    states, allowed = batch["states"][:, :-1], vocab.grammar.allowed
    t = torch.log_softmax(masked_logits(target(**kw).logits[:, :-1], states, allowed) / 2.0, -1)
    d = torch.log_softmax(masked_logits(draft(**kw).logits[:, :-1], states, allowed) / 2.0, -1)
    w = (batch["weights"][:, 1:] == 1.0).double()
    ref = ((t.exp() * (t - d)).sum(-1) * w).sum() / w.sum() * 4.0
    assert torch.allclose(loss.double(), ref.detach(), rtol=1e-5)


def test_a_right_padded_batch_runs_unmasked_with_the_same_real_states():
    """hidden_and_head drops the padding mask only where no real position could see a pad."""
    from voicestream.models import right_padded
    from voicestream.voice.slot_logits import hidden_and_head

    vocab = VoiceVocab()
    model = build_model(PRESETS["tiny"][0], vocab, seed=1).double()
    batch = _batch(vocab)
    mask = batch["attention_mask"]
    assert right_padded(mask) and not bool(mask.all())  # the test needs a padded row
    hidden, _ = hidden_and_head(model, batch["input_ids"], mask)
    ref = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.allclose(hidden[real], ref[real], atol=1e-10)

    left = mask.flip(-1)  # left padding: dropping the mask would change real states
    assert not right_padded(left)
    assert right_padded(torch.ones(2, 5, dtype=torch.long))
