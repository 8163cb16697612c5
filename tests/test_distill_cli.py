"""`voicestream distill` trains a draft for a target it has never seen, and resumes."""
import json

from voicestream.cli import main as cli_main
from voicestream.models import random_llama


def test_distill_raises_acceptance_and_resumes(tmp_path):
    target = random_llama(vocab_size=64, hidden_size=64, num_layers=3, num_heads=4, seed=7)
    target.save_pretrained(tmp_path / "target")
    out = tmp_path / "run"
    base = ["distill", "--target", str(tmp_path / "target"), "--out", str(out), "--n-prompts", "20",
            "--gen-tokens", "24", "--layers", "1", "--hidden", "32", "--batch", "8", "--lr", "3e-3",
            "--save-every", "20", "--eval-tokens", "24"]
    assert cli_main(base + ["--steps", "40"]) == 0
    first = json.loads((out / "acceptance.json").read_text())
    assert first["step"] == 40
    assert (out / "draft" / "config.json").exists()
    assert first["kl"] < 0.5 * first["kl_first"]  # the draft learned the target's distribution
    for key in ("acceptance_before", "acceptance_after"):
        assert first[key]["mean_accepted_per_target_forward"] >= 1.0  # measured with the real decoder
    assert cli_main(base + ["--steps", "50", "--resume"]) == 0
    second = json.loads((out / "acceptance.json").read_text())
    assert second["step"] == 50  # continued from 40, not from 0


def test_distill_a_voice_target_uses_text_prompts_and_its_grammar(tmp_path):
    """A voicestream voice LM: prompts are sentences, generations follow the slot grammar."""
    import torch

    from voicestream.voice.presets import PRESETS, build_model
    from voicestream.voice.vocab import VoiceVocab

    vocab = VoiceVocab()
    build_model(PRESETS["tiny"][0], vocab, seed=5).save_pretrained(tmp_path / "voice")
    out = tmp_path / "run"
    assert cli_main(["distill", "--target", str(tmp_path / "voice"), "--out", str(out), "--n-prompts", "10",
                     "--gen-tokens", "60", "--layers", "1", "--hidden", "32", "--steps", "10",
                     "--eval-tokens", "30"]) == 0
    data = torch.load(out / "data.pt")
    for seq, n in zip(data["train"], data["prompt_lens"]):
        assert seq[:n][0] == vocab.bos_id and seq[n - 1] == vocab.audio_start_id  # a text prompt
        vocab.grammar.run(seq)  # strict: every generated token is legal for its slot
        assert len(seq) > n
    report = json.loads((out / "acceptance.json").read_text())
    assert report["acceptance_after"]["prompts"] == 1


def test_voice_distillation_compares_only_legal_ids_at_generated_positions():
    """The KL covers what decoding compares: generated positions, over the grammar's legal ids."""
    import torch

    from voicestream.distill import kl_weights, legal_masks
    from voicestream.voice.vocab import VoiceVocab

    vocab = VoiceVocab()
    prompt = vocab.prompt_for("hi")
    lo, hi = vocab.slot_ranges[0]
    gen = [vocab.word_id, *vocab.text_ids("hi", normalize=False), lo + 3]
    seqs = [prompt + gen, prompt + gen[:2]]
    width = len(seqs[0])
    w = kl_weights(seqs, [len(prompt)] * 2, width)
    assert w[0].tolist() == [0.0] * (len(prompt) - 1) + [1.0] * len(gen) + [0.0]
    assert w[1].sum() == 2  # the shorter row stops at its own end
    legal = legal_masks(vocab, seqs, width)
    assert legal.shape == (2, width, vocab.vocab_size)
    after_audio_start = legal[0, len(prompt) - 1]
    assert after_audio_start.sum() == 1 and after_audio_start[vocab.word_id]  # only <word> may follow
    inside_frame = legal[0, width - 1]  # after a slot-0 code only slot-1 codes are legal
    lo1, hi1 = vocab.slot_ranges[1]
    assert inside_frame.sum() == hi1 - lo1 and inside_frame[lo1:hi1].all()
    assert legal_masks(None, seqs, width) is None
