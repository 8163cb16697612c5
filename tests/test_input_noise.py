"""Codec-token input noise: swaps only codec inputs, within their own codebook, at rate p;
training with it still learns, resumes exactly and keeps held-out scoring clean."""

import numpy as np
import pytest
import torch

from voicestream.voice.input_noise import CodecInputNoise
from voicestream.voice.train import grammar_loss, make_trainer
from voicestream.voice.vocab import VoiceVocab

pytest.importorskip("pycodec2")


def _sequence(vocab: VoiceVocab, n_frames: int = 400) -> torch.Tensor:
    rng = np.random.default_rng(0)
    frames = [rng.integers(lo, hi) for _ in range(n_frames) for lo, hi in vocab.slot_ranges]
    prompt = vocab.prompt_for("hello there")
    return torch.tensor([prompt + [int(x) for x in frames] + [vocab.audio_end_id]], dtype=torch.long)


def test_noise_swaps_only_codec_tokens_within_their_codebook_at_rate_p():
    vocab = VoiceVocab()
    ids = _sequence(vocab)
    noisy = CodecInputNoise(vocab, 0.3)(ids, torch.Generator().manual_seed(1))
    assert noisy.shape == ids.shape and not torch.equal(noisy, ids)
    codec = ids < vocab.codec_vocab_size
    assert torch.equal(noisy[~codec], ids[~codec])  # prompt, markers untouched
    changed = (noisy != ids) & codec
    # a uniform redraw can land on the same code: expected change rate p * (1 - 1/size)
    assert 0.25 < float(changed.sum()) / float(codec.sum()) < 0.33
    slot_of = torch.full((vocab.codec_vocab_size,), -1)
    for k, (lo, hi) in enumerate(vocab.slot_ranges):
        slot_of[lo:hi] = k
    assert torch.equal(slot_of[noisy[codec]], slot_of[ids[codec]])  # same codebook, so the grammar holds
    assert ids.min() >= 0 and noisy[codec].max() < vocab.codec_vocab_size


def test_zero_noise_is_identity_and_bad_rates_are_refused():
    vocab = VoiceVocab()
    ids = _sequence(vocab, 5)
    assert CodecInputNoise(vocab, 0.0)(ids) is ids
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError):
            CodecInputNoise(vocab, p)


def test_noisy_loss_only_in_training_mode(tiny_corpus_words, tmp_path):
    trainer, summary = make_trainer(tiny_corpus_words, tmp_path, preset_name="tiny", input_noise=0.5,
                                    loop_overrides={"progress": False, "threads": 1, "max_steps": 1})
    assert summary["input_noise"] == 0.5
    from voicestream.voice.data import collate

    vocab = VoiceVocab.from_dict(trainer.model.config.voicestream_vocab)
    batch = collate(trainer.examples[:2], vocab.pad_id)
    clean, noisy = grammar_loss(vocab), grammar_loss(vocab, input_noise=0.5)
    model = trainer.model
    with torch.no_grad():
        model.eval()
        assert float(noisy(model, batch)[0]) == pytest.approx(float(clean(model, batch)[0]))
        model.train()
        torch.manual_seed(0)
        a = float(noisy(model, batch)[0])
        assert a != pytest.approx(float(clean(model, batch)[0]))


def test_input_noise_survives_resume(tiny_corpus_words, tmp_path):
    first, _ = make_trainer(tiny_corpus_words, tmp_path, preset_name="tiny", input_noise=0.2,
                            loop_overrides={"progress": False, "threads": 1, "max_steps": 2, "eval_batches": 0})
    first.run()
    resumed, summary = make_trainer(tiny_corpus_words, tmp_path, preset_name="tiny", resume=True,
                                    loop_overrides={"progress": False, "threads": 1, "max_steps": 3})
    assert summary["input_noise"] == 0.2 and summary["resumed_at_step"] == 2


@pytest.fixture(scope="module")
def tiny_corpus_words(tmp_path_factory):
    from voicestream.voice.corpus import CorpusConfig, SyntheticTeacher, build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, CorpusConfig(n=6, heldout=2, shard_size=6, seed=1), teacher=SyntheticTeacher(), progress=False)
    return out
