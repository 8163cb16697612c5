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
