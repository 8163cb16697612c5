"""`voicestream say` on a voice checkpoint the test builds and saves itself."""
import wave

import pytest
import torch

from voicestream.cli import main as cli_main
from voicestream.models import random_llama, truncated_copy
from voicestream.spec.quant import resolve_weights
from voicestream.voice.vocab import VoiceVocab


@pytest.fixture(scope="module")
def voice_dirs(tmp_path_factory):
    vocab = VoiceVocab()
    d = tmp_path_factory.mktemp("voice")
    target = random_llama(vocab_size=vocab.vocab_size, hidden_size=64, num_layers=2, num_heads=4, seed=0,
                          eos_token_id=vocab.audio_end_id)
    target.config.voicestream_vocab = vocab.to_dict()
    draft = truncated_copy(target, 1)
    target.save_pretrained(d / "target")
    draft.save_pretrained(d / "draft")
    return d / "target", d / "draft"


@pytest.mark.parametrize("no_draft,self_draft,weights", [(False, False, "fp32"), (True, False, "fp32"),
                                                         (False, True, "fp32"), (False, False, "auto")],
                         ids=["draft", "no-draft", "self:1", "auto-weights"])
def test_say_writes_audio_and_reports(voice_dirs, tmp_path, capsys, no_draft, self_draft, weights):
    target, draft = voice_dirs
    out = tmp_path / "hello.wav"
    args = ["say", "Hi there.", "-o", str(out), "--target", str(target), "--draft", "self:1" if self_draft else str(draft),
            "--weights", weights]
    if no_draft:
        args.append("--no-draft")
    assert cli_main(args) == 0
    report = capsys.readouterr().out
    assert "time to first audio" in report and "RTF" in report and "accepted tokens per target forward" in report
    assert ("no draft" in report) == no_draft
    assert ("draft self:1" in report) == self_draft
    assert f"{resolve_weights(weights)} weights" in report
    if not no_draft:  # the draft really drafted: more than one token per target forward
        assert float(report.rsplit("accepted tokens per target forward", 1)[1].split()[0]) > 1.0
    with wave.open(str(out)) as w:
        assert w.getframerate() == 8000 and w.getnframes() > 0 and w.getnframes() % 160 == 0


def test_say_speaks_a_paragraph_a_sentence_at_a_time(voice_dirs, tmp_path, capsys):
    """Cut as the server cuts text: the paragraph's audio is its sentences' audio, in order."""
    target, _ = voice_dirs
    frames = {}
    for name, text in (("a", "Hi there."), ("b", "How are you?"), ("ab", "Hi there. How are you?")):
        out = tmp_path / f"{name}.wav"
        assert cli_main(["say", text, "-o", str(out), "--target", str(target), "--no-draft", "--weights", "fp32"]) == 0
        with wave.open(str(out)) as w:
            frames[name] = w.readframes(w.getnframes())
        report = capsys.readouterr().out
        assert ("in 2 segments" in report) == (name == "ab")
    assert frames["ab"] == frames["a"] + frames["b"] and frames["a"] and frames["b"]


def test_say_without_a_default_voice_is_a_clear_error(tmp_path, monkeypatch):
    import voicestream.say as say

    monkeypatch.setattr(say, "DEFAULT_VOICE_DIR", tmp_path / "none")
    with pytest.raises(SystemExit, match="no default voice is installed"):
        cli_main(["say", "Hello", "-o", str(tmp_path / "x.wav")])


@pytest.mark.parametrize("text,out,message", [
    ("", "x.wav", "text is empty or whitespace only"),
    ("  \n ", "x.wav", "text is empty or whitespace only"),
    ("Hello.", "missing/x.wav", "no directory"),
])
def test_say_rejects_bad_input_in_one_line_before_loading_a_model(tmp_path, capsys, monkeypatch, text, out, message):
    from voicestream.voice.synthesize import Voice

    def no_load(*a, **k):
        raise AssertionError("the model loaded before the input was checked")

    monkeypatch.setattr(Voice, "load", no_load)
    assert cli_main(["say", text, "-o", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voicestream say: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / out).exists()


def test_say_with_a_missing_model_is_a_one_line_error_or_a_traceback_on_request(tmp_path, capsys):
    assert cli_main(["say", "Hello.", "-o", str(tmp_path / "x.wav"), "--target", str(tmp_path / "nope")]) == 2
    assert "voicestream say: error: model path" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli_main(["--traceback", "say", "Hello.", "-o", str(tmp_path / "x.wav"), "--target", str(tmp_path / "nope")])


def test_serve_without_voice_flags_serves_the_built_in_voice(tmp_path, monkeypatch):
    import voicestream.say as say
    from voicestream.cli import build_parser
    from voicestream.server.cli import load_voices
    from voicestream.voice.package import package_model
    from voicestream.voice.presets import PRESETS, build_model

    args = build_parser().parse_args(["serve"])
    monkeypatch.setattr(say, "DEFAULT_VOICE_DIR", tmp_path / "none")
    with pytest.raises(SystemExit, match="no built-in voice"):
        load_voices(args)
    build_model(PRESETS["tiny"][0], VoiceVocab(), seed=2).save_pretrained(tmp_path / "ckpt")
    package_model(tmp_path / "ckpt", tmp_path / "default" / "target")
    package_model(tmp_path / "ckpt", tmp_path / "default" / "draft")
    monkeypatch.setattr(say, "DEFAULT_VOICE_DIR", tmp_path / "default")
    (voice,) = load_voices(args)
    assert voice.name == "default" and voice.sample_rate == 8000
    assert voice.voice.draft is not None  # the installed draft speculates
    voice.voice.close()


def test_say_pipelined_speaks_what_sequential_speaks(voice_dirs, tmp_path, capsys):
    target, draft = voice_dirs
    pcm = []
    for extra in ([], ["--pipelined"]):
        out = tmp_path / f"x{len(extra)}.wav"
        assert cli_main(["say", "Hi there.", "-o", str(out), "--target", str(target), "--draft", str(draft),
                         "--weights", "fp32", *extra]) == 0
        with wave.open(str(out)) as w:
            pcm.append(w.readframes(w.getnframes()))
    assert pcm[0] == pcm[1] and len(pcm[0]) > 0
    assert cli_main(["say", "Hi there.", "-o", str(tmp_path / "y.wav"), "--target", str(target), "--pipelined",
                     "--draft-length", "cost"]) == 2  # the cost policy times sequential steps: a clear error
    assert "pipelined" in capsys.readouterr().err


def test_bench_voice_compares_weight_formats_and_drafts(voice_dirs, capsys):
    import json

    target, draft = voice_dirs
    weights = ["fp32", "int8"] if resolve_weights("auto") == "int8" else ["fp32"]
    assert cli_main(["bench", "voice", "--target", str(target), "--drafts", str(draft), "self:1", "--n", "1",
                     "--sentences", "Hi there.", "--threads", "1", "--weights", *weights, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    runs = {r["name"]: r for r in report["runs"]}
    assert len(runs) == (1 + 2 * 2) * len(weights)  # plain + two drafts x two draft-length policies
    assert {r["name"].split(", ")[-1] for r in runs.values() if r["draft"]} == {"heuristic]", "cost]"}
    assert runs["plain-fp32"]["x_plain_fp32"] == 1.0
    for r in runs.values():
        assert r["tokens_per_s"] > 0 and r["rtf"] > 0
        if r["draft"] is not None and r["weights"] == "fp32":
            assert r["same_audio_as_plain"] is True  # greedy speculation is exact in float32
            assert r["accepted_per_target_forward"] >= 1.0


def test_bench_voice_runs_an_overlapped_row(voice_dirs, capsys):
    import json

    target, draft = voice_dirs
    assert cli_main(["bench", "voice", "--target", str(target), "--drafts", str(draft), "--n", "1",
                     "--sentences", "Hi there.", "--threads", "1", "--draft-threads", "1", "--weights", "fp32",
                     "--draft-lengths", "overlapped", "--json"]) == 0
    runs = {r["name"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    row = next(r for name, r in runs.items() if name.endswith("overlapped]"))
    assert row["same_audio_as_plain"] is True and row["tokens_per_s"] > 0  # pipelined greedy is exact in float32


def test_bench_voice_measures_the_ceiling_with_oracle_drafts(voice_dirs, capsys):
    """Oracle rows replay plain float32 decoding: exact audio, and a perfect oracle is accepted
    far more often than one that is always wrong (the grammar's spans included)."""
    import json

    target, _ = voice_dirs
    assert cli_main(["bench", "voice", "--target", str(target), "--drafts", "oracle:1", "oracle:0", "--n", "1",
                     "--sentences", "Hi there, how are you?", "--threads", "1", "--weights", "fp32",
                     "--draft-lengths", "fixed", "--json"]) == 0
    runs = {r["name"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    perfect, wrong = runs["spec-fp32 [oracle:1, fixed]"], runs["spec-fp32 [oracle:0, fixed]"]
    assert perfect["same_audio_as_plain"] is True and wrong["same_audio_as_plain"] is True
    assert perfect["accepted_per_target_forward"] > 3 > wrong["accepted_per_target_forward"]
    assert cli_main(["bench", "voice", "--target", str(target), "--drafts", "oracle", "--weights", "int8"]) == 2
    assert "fp32" in capsys.readouterr().err
