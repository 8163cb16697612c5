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
