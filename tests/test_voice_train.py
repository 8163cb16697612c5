"""Training, exact resume, distillation and end-to-end synthesis with tiny models."""

import json

import numpy as np
import pytest
import torch

from voicestream.voice.corpus import CorpusConfig, SyntheticTeacher, build_corpus
from voicestream.voice.distill import make_distiller, measure_acceptance
from voicestream.voice.loop import LoopConfig, lr_at, lr_by_time
from voicestream.voice.presets import PRESETS, build_model
from voicestream.voice.synthesize import Voice
from voicestream.voice.train import make_trainer
from voicestream.voice.vocab import VoiceVocab

pytest.importorskip("pycodec2")

QUIET = {"progress": False, "threads": 1, "ckpt_minutes": 60.0, "eval_batches": 1}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, CorpusConfig(n=8, heldout=2, shard_size=8, seed=1), teacher=SyntheticTeacher(), progress=False)
    return out


def test_lr_schedule_warms_up_then_decays():
    cfg = LoopConfig(lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55) and lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(500, cfg) == pytest.approx(0.1)


def test_time_schedule_warms_up_by_steps_then_decays_with_the_budget():
    cfg = LoopConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_by_time(0, 0.5, cfg) == pytest.approx(0.1)  # warmup counts this run's steps, not time
    assert lr_by_time(10, 0.0, cfg) == pytest.approx(1.0) and lr_by_time(500, 0.5, cfg) == pytest.approx(0.55)
    assert lr_by_time(500, 1.0, cfg) == pytest.approx(0.1) and lr_by_time(500, 3.0, cfg) == pytest.approx(0.1)


def test_keep_best_keeps_the_lowest_heldout_checkpoint_across_resumes(tiny_corpus, tmp_path):
    import csv

    from voicestream.models import load_causal_lm

    over = {**QUIET, "ckpt_minutes": 0.0, "keep_best": True, "lr": 3e-2, "warmup_steps": 1}  # checkpoint every step
    trainer, _ = make_trainer(tiny_corpus, tmp_path, preset_name="tiny", loop_overrides={**over, "max_steps": 10})
    result = trainer.run()
    with open(tmp_path / "log.csv") as f:
        scored = [(float(r["heldout_loss"]), int(r["step"])) for r in csv.DictReader(f) if r["heldout_loss"]]
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    assert best == result["best"] and best["step"] == min(scored)[1]  # the log rounds to 4 places
    assert best["heldout_loss"] == pytest.approx(min(scored)[0], abs=1e-4)
    # the weights in OUT/best score that loss (not the last step's)
    trainer.model = load_causal_lm(tmp_path / "best")
    assert trainer.evaluate() == pytest.approx(best["heldout_loss"], abs=1e-5)
    # a resumed run starts from the best so far: it replaces OUT/best only with a lower loss
    resumed, _ = make_trainer(tiny_corpus, tmp_path, preset_name="tiny", resume=True,
                              loop_overrides={**over, "max_steps": 12})
    assert resumed.best == (best["heldout_loss"], best["step"])
    after = resumed.run()["best"]
    assert after["heldout_loss"] <= best["heldout_loss"]


def test_training_reduces_loss(tiny_corpus, tmp_path):
    trainer, summary = make_trainer(tiny_corpus, tmp_path, preset_name="tiny", loop_overrides={**QUIET, "max_steps": 16})
    assert summary["train_examples"]["kept"] == 8 and summary["layout"] == "words"
    trainer.run()
    import csv

    with open(tmp_path / "log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["loss"]]
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 16
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3
    assert (tmp_path / "model" / "config.json").exists() and (tmp_path / "model" / "model.safetensors").exists()


def _state(trainer):
    params = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    opt = trainer.opt.state_dict()["state"]
    return params, opt, trainer.step, trainer.position, trainer.tokens_seen


def test_resume_continues_exactly(tiny_corpus, tmp_path):
    straight, _ = make_trainer(tiny_corpus, tmp_path / "a", preset_name="tiny", loop_overrides={**QUIET, "max_steps": 6})
    straight.run()
    first, _ = make_trainer(tiny_corpus, tmp_path / "b", preset_name="tiny", loop_overrides={**QUIET, "max_steps": 3})
    first.run()
    with pytest.raises(FileExistsError):
        make_trainer(tiny_corpus, tmp_path / "b", preset_name="tiny")
    resumed, summary = make_trainer(
        tiny_corpus, tmp_path / "b", preset_name="tiny", resume=True, loop_overrides={**QUIET, "max_steps": 6}
    )
    assert summary["resumed_at_step"] == 3 and resumed.step == 3 and resumed.position == first.position
    resumed.run()
    pa, oa, sa, posa, toka = _state(straight)
    pb, ob, sb, posb, tokb = _state(resumed)
    assert (sa, posa, toka) == (sb, posb, tokb) == (6, posa, toka)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    for k in oa:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa[k][name], ob[k][name])


def test_a_signal_stops_training_after_its_step_and_saves_a_checkpoint(tiny_corpus, tmp_path):
    import os
    import signal

    trainer, _ = make_trainer(tiny_corpus, tmp_path, preset_name="tiny", loop_overrides={**QUIET, "max_steps": 50})
    inner, calls = trainer.loss_fn, []

    def loss_fn(model, batch):  # a `kill` arrives during the third step
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return inner(model, batch)

    trainer.loss_fn = loss_fn
    before = signal.getsignal(signal.SIGTERM)
    result = trainer.run()
    assert result["stopped_by_signal"] and result["step"] == 3 and len(calls) == 3
    assert torch.load(tmp_path / "model" / "trainer_state.pt", weights_only=False)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before  # the process's own handler is back
    resumed, summary = make_trainer(tiny_corpus, tmp_path, preset_name="tiny", resume=True,
                                    loop_overrides={**QUIET, "max_steps": 4})
    assert summary["resumed_at_step"] == 3 and not resumed.run()["stopped_by_signal"]


@pytest.mark.parametrize("kind,unroll", [("lm", 1), ("feature", 1), ("feature", 3)],
                         ids=["lm", "feature", "feature-unrolled"])
def test_distillation_reduces_kl_and_reports_acceptance(tiny_corpus, tmp_path, kind, unroll):
    target_run, _ = make_trainer(tiny_corpus, tmp_path / "t", preset_name="tiny", loop_overrides={**QUIET, "max_steps": 8})
    target_run.run()
    trainer, target, vocab, _summary = make_distiller(
        tmp_path / "t" / "model", tiny_corpus, tmp_path / "d", preset_name="tiny",
        loop_overrides={**QUIET, "max_steps": 10}, seed=5, kind=kind, unroll=unroll,
    )
    trainer.run()
    if kind == "feature":  # the checkpoint reloads as a feature draft, and resumes as one
        from voicestream.models import resolve_draft
        from voicestream.spec.feature_draft import FeatureDraft

        assert isinstance(resolve_draft(target, str(tmp_path / "d" / "model")), FeatureDraft)
        again, _, _, summary = make_distiller(tmp_path / "t" / "model", tiny_corpus, tmp_path / "d", resume=True,
                                              loop_overrides={**QUIET, "max_steps": 10})
        assert isinstance(again.model, FeatureDraft) and summary["kind"] == "feature" and again.step == 10
        assert again.cfg.extra["unroll"] == unroll  # a resumed run trains the same depths
    import csv

    with open(tmp_path / "d" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    kls = [float(r["kl"]) for r in rows if r["kl"]]
    deep = [float(r["agree_d3"]) for r in rows if r.get("agree_d3")]
    assert len(deep) == (10 if unroll == 3 else 0)  # the deeper depths are trained and logged
    assert all(0.0 <= a <= 1.0 for a in deep)
    assert len(kls) == 10 and np.mean(kls[-3:]) < 0.7 * np.mean(kls[:3])
    with torch.inference_mode():
        acc = measure_acceptance(target, trainer.model.eval(), vocab, ["hi there."], max_new_tokens=40)
    assert acc["new_tokens"] > 0 and acc["mean_accepted_per_target_forward"] > 0


@pytest.mark.parametrize("with_draft", [False, True])
def test_voice_end_to_end_pcm_matches_tokens(with_draft):
    v = VoiceVocab()
    target = build_model(PRESETS["tiny"][0], v, seed=11)
    draft = build_model(PRESETS["tiny"][0], v, seed=12) if with_draft else None
    voice = Voice(target, draft)
    cfg = voice.spec_config.with_(max_new_tokens=150)
    stats_holder = []
    from voicestream.voice.synthesize import SynthesisStats

    st = SynthesisStats()
    chunks = list(voice.stream("Hello, world.", cfg, stats=st))
    stats_holder.append(st)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    assert audio.dtype == np.float32
    assert st.frames == st.codec_tokens // 7
    assert audio.size == st.frames * 160 == round(st.audio_s * 8000)
    assert st.lm_tokens >= st.codec_tokens
    assert st.ttfa_s is None or st.ttfa_s <= st.wall_s
    # the whole-utterance API gives the same audio (greedy decoding is deterministic)
    res = voice.synthesize("Hello, world.", cfg)
    assert np.array_equal(res.audio, audio) and res.sample_rate == 8000
    assert res.stats.accepted_per_target_forward > 0
    voice.close()


def test_bf16_autocast_defaults_to_what_the_device_computes_natively():
    """bf16 is emulated (~13x slower) on CPUs without AVX512-BF16/AMX: never the default there."""
    import argparse

    from voicestream.models import compute_dtype, native_bf16
    from voicestream.voice.loop import add_loop_arguments, loop_overrides

    ap = argparse.ArgumentParser()
    add_loop_arguments(ap)
    assert loop_overrides(ap.parse_args([]))["bf16"] == native_bf16("cpu")
    assert loop_overrides(ap.parse_args(["--bf16"]))["bf16"] is True
    assert loop_overrides(ap.parse_args(["--no-bf16"]))["bf16"] is False
    assert compute_dtype("cpu") == torch.float32  # decoding: few rows per step, row-invariant results
    assert native_bf16("meta") is False


def test_recipe_builds_a_voice_end_to_end_and_resumes(tiny_corpus, tmp_path):
    """One command: target, draft, acceptance, installed as a loadable voice; a second call resumes."""
    from voicestream.voice.recipe import main as recipe

    out, dst = tmp_path / "run", tmp_path / "voice"
    base = ["--out", str(out), "--corpus", str(tiny_corpus), "--target-preset", "tiny", "--draft-preset", "tiny",
            "--device", "cpu", "--no-bf16", "--threads", "1", "--no-progress", "--eval-prompts", "1",
            "--eval-max-tokens", "40", "--install", "--install-dir", str(dst)]
    assert recipe(base + ["--max-steps", "3"]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert first["target"]["step"] == 3 and first["draft"]["step"] == 3
    assert first["acceptance"]["mean_accepted_per_target_forward"] >= 1.0
    for stage in ("target", "draft"):  # each hands on its best held-out checkpoint (scored at its end at least)
        assert first[stage]["handed_on"] == str(out / stage / "best") and first[stage]["best"]["step"] >= 1
    assert "unit texts" in first["lexicon"] and (dst / "target" / "lexicon.json").is_file()  # built, then installed
    voice = Voice.load(dst / "target", dst / "draft")
    assert voice.lexicon is not None and len(voice.lexicon) > 0
    res = voice.synthesize("hi there.", voice.spec_config.with_(max_new_tokens=600))  # phone lists come first
    voice.close()
    assert res.audio.size > 0 and res.stats.accepted_per_target_forward >= 1.0
    assert recipe(base + ["--max-steps", "5"]) == 0
    second = json.loads((out / "summary.json").read_text())
    assert second["target"]["resumed_at_step"] == 3 and second["target"]["step"] == 5
    # a new run warm-starts both models from the installed voice, with input noise on
    warm = tmp_path / "warm"
    warm_args = [str(warm) if a == str(out) else str(tmp_path / "voice2") if a == str(dst) else a for a in base]
    assert recipe(warm_args + ["--max-steps", "1", "--init-from", str(dst / "target"), "--draft-init-from", str(dst / "draft"),
                   "--input-noise", "0.1"]) == 0
    third = json.loads((warm / "summary.json").read_text())
    assert third["target"]["input_noise"] == 0.1 and third["target"]["step"] == 1
    assert third["target"]["init_from"] == str(dst / "target") and third["draft"]["init_from"] == str(dst / "draft")


def test_voice_distillation_builds_and_grows_feature_drafts_of_several_layers(tiny_corpus, tmp_path):
    """``layers`` (``--layers``) gives a fresh feature draft that depth; from ``init_from`` a
    shallower one is grown (computing what it did); a depth that disagrees with what would be
    trained -- a resumed draft's, or an LM draft's -- is refused rather than ignored."""
    from voicestream.spec.feature_draft import FeatureDraft, shift_features

    target_run, _ = make_trainer(tiny_corpus, tmp_path / "t", preset_name="tiny", loop_overrides={**QUIET, "max_steps": 4})
    target_run.run()
    tgt = tmp_path / "t" / "model"
    one, target, _, _ = make_distiller(tgt, tiny_corpus, tmp_path / "one", loop_overrides={**QUIET, "max_steps": 3},
                                       kind="feature", seed=1)
    one.run()
    assert len(one.model.layers) == 1
    two, _, _, _ = make_distiller(tgt, tiny_corpus, tmp_path / "two", loop_overrides={**QUIET, "max_steps": 3},
                                  kind="feature", layers=2, init_from=tmp_path / "one" / "model")
    assert isinstance(two.model, FeatureDraft) and len(two.model.layers) == 2
    ids = torch.randint(0, target.config.vocab_size, (1, 12))
    with torch.no_grad():
        inputs = (shift_features(target.get_decoder()(input_ids=ids).last_hidden_state), target.get_input_embeddings()(ids))
        before = one.model.eval()(*inputs)
        grown = two.model.eval()(*inputs)
    torch.testing.assert_close(grown, before)  # the new layer starts as a no-op
    two.run()
    fresh, _, _, _ = make_distiller(tgt, tiny_corpus, tmp_path / "three", kind="feature", layers=3,
                                    loop_overrides={**QUIET, "max_steps": 1})
    assert len(fresh.model.layers) == 3
    with pytest.raises(ValueError, match="resumed run continues the saved draft"):
        make_distiller(tgt, tiny_corpus, tmp_path / "two", resume=True, layers=3, loop_overrides=QUIET)
    with pytest.raises(ValueError, match="feature drafts"):
        make_distiller(tgt, tiny_corpus, tmp_path / "lm", preset_name="tiny", layers=2, loop_overrides=QUIET)
