"""`voicestream distill` trains a draft for a target it has never seen, and resumes."""
import json

import pytest

from voicestream.cli import main as cli_main
from voicestream.models import random_llama


@pytest.mark.parametrize("kind", ["lm", "feature"])
def test_distill_raises_acceptance_and_resumes(tmp_path, kind):
    import torch

    target = random_llama(vocab_size=64, hidden_size=64, num_layers=3, num_heads=4, seed=7)
    with torch.no_grad():  # a peaked target: its greedy choices follow from context a draft can learn
        target.lm_head.weight.mul_(10)
    target.save_pretrained(tmp_path / "target")
    out = tmp_path / "run"
    # 80 prompts: the first 8 are held out, and a draft must generalise to them, not memorise
    base = ["distill", "--target", str(tmp_path / "target"), "--out", str(out), "--n-prompts", "80",
            "--gen-tokens", "32", "--layers", "1", "--hidden", "32", "--batch", "8", "--lr", "6e-3",
            "--save-every", "20", "--eval-tokens", "24", "--kind", kind, "--data-temperature", "0", "--warmup", "4"]
    assert cli_main(base + ["--steps", "40"]) == 0
    first = json.loads((out / "acceptance.json").read_text())
    assert first["step"] == 40
    assert first["lr"] < 0.15 * 6e-3  # annealed by cosine decay to a tenth of --lr at --steps
    assert (out / "draft" / "config.json").exists()
    assert first["kl"] < 0.5 * first["kl_first"]  # the draft learned the target's distribution
    for key in ("acceptance_before", "acceptance_after"):
        assert first[key]["mean_accepted_per_target_forward"] >= 1.0  # measured with the real decoder
    assert cli_main(base + ["--steps", "50", "--resume"]) == 0
    second = json.loads((out / "acceptance.json").read_text())
    assert second["step"] == 50  # continued from 40, not from 0
    if kind == "feature":
        from voicestream.models import load_causal_lm, resolve_draft
        from voicestream.spec.feature_draft import FeatureDraft

        draft = resolve_draft(load_causal_lm(tmp_path / "target"), str(out / "draft"))
        assert isinstance(draft, FeatureDraft)
        after = second["acceptance_after"]["mean_accepted_per_target_forward"]
        assert after > first["acceptance_before"]["mean_accepted_per_target_forward"] + 0.2


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

    import torch.nn.functional as F

    from voicestream.distill import grammar_states, kl_loss, kl_weights, padded_batch
    from voicestream.voice.presets import PRESETS, build_model
    from voicestream.voice.vocab import VoiceVocab

    vocab = VoiceVocab()
    prompt = vocab.prompt_for("hi.")
    lo, hi = vocab.slot_ranges[0]
    lo1, hi1 = vocab.slot_ranges[1]
    gen = [vocab.word_id, *vocab.text_ids("hi.", normalize=False), lo + 3, lo1 + 2]
    seqs = [prompt + gen, prompt + gen[:2]]
    width = len(seqs[0])
    w = kl_weights(seqs, [len(prompt)] * 2, width)
    assert w[0].tolist() == [0.0] * (len(prompt) - 1) + [1.0] * len(gen) + [0.0]
    assert w[1].sum() == 2  # the shorter row stops at its own end
    legal = vocab.grammar.allowed[grammar_states(vocab, seqs, width)]
    assert legal.shape == (2, width, vocab.vocab_size)
    after_audio_start = legal[0, len(prompt) - 1]
    assert after_audio_start.sum() == 1 and after_audio_start[vocab.word_id]  # only <word> may follow
    inside_frame = legal[0, width - 2]  # after a slot-0 code only slot-1 codes are legal
    assert inside_frame.sum() == hi1 - lo1 and inside_frame[lo1:hi1].all()
    from voicestream.voice.vocab import GrammarState

    assert torch.equal(legal[0, width - 1], vocab.grammar.allowed[GrammarState.DONE])  # predicts padding
    # the slot-restricted KL the voice path computes equals the masked full-vocabulary KL
    target = build_model(PRESETS["tiny"][0], vocab, seed=1).eval()
    draft = build_model(PRESETS["tiny"][0], vocab, seed=2)
    batch, mask = padded_batch(seqs, vocab.pad_id)
    got = kl_loss(target, draft, vocab, batch, mask, seqs, w)
    with torch.no_grad():
        t = F.log_softmax(target(batch, attention_mask=mask).logits.float().masked_fill(~legal, -1e4), -1)
        d = F.log_softmax(draft(batch, attention_mask=mask).logits.float().masked_fill(~legal, -1e4), -1)
    want = ((t.exp() * (t - d)).sum(-1) * w).sum() / w.sum()
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-4)
    got.backward()  # gradients reach the draft only
    assert draft.model.layers[0].self_attn.q_proj.weight.grad is not None
    assert all(p.grad is None for p in target.parameters())


def test_training_data_is_generated_batched_with_each_prompts_own_randomness():
    """Batched generation gives each prompt exactly what it gets alone (float64), so the data
    does not depend on how many prompts run at once; unsupported models fall back to one by one."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from voicestream.config import SamplingConfig, SpecConfig
    from voicestream.distill import generate_data
    from voicestream.spec import SpeculativeDecoder

    target = random_llama(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, seed=3).double()
    prompts = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10], [11]]
    data = generate_data(target, prompts, 20, seed=5, batch=3)
    cfg = SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=1.0), max_new_tokens=20)
    for i, (p, seq) in enumerate(zip(prompts, data)):
        alone = [t for c in SpeculativeDecoder(target).generate(p, cfg.with_(seed=5 + i)) for t in c.tokens]
        assert seq == p + alone
    assert len({tuple(s[len(p):]) for p, s in zip(prompts, data)}) == len(prompts)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=64)).eval()
    out = generate_data(gpt2, prompts[:2], 6, seed=0)
    assert [len(s) for s in out] == [len(p) + 6 for p in prompts[:2]]


def test_distill_continues_from_a_given_draft_on_greedy_generations(tmp_path):
    """--init-from starts from an existing draft (not a fresh one); --data-temperature 0 trains
    on the target's greedy continuations, the contexts a greedy decoder drafts in."""
    import torch

    from voicestream.config import SpecConfig
    from voicestream.models import load_causal_lm
    from voicestream.spec import SpeculativeDecoder

    target = random_llama(vocab_size=64, hidden_size=64, num_layers=3, num_heads=4, seed=7)
    target.save_pretrained(tmp_path / "target")
    common = ["--target", str(tmp_path / "target"), "--n-prompts", "10", "--gen-tokens", "16", "--layers", "1",
              "--hidden", "32", "--batch", "4", "--eval-tokens", "16"]
    assert cli_main(["distill", *common, "--out", str(tmp_path / "a"), "--steps", "15"]) == 0
    first = load_causal_lm(tmp_path / "a" / "draft")
    assert cli_main(["distill", *common, "--out", str(tmp_path / "b"), "--steps", "0", "--data-temperature", "0",
                     "--init-from", str(tmp_path / "a" / "draft")]) == 0
    second = load_causal_lm(tmp_path / "b" / "draft")
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)  # no steps: exactly the draft it started from
    data = torch.load(tmp_path / "b" / "data.pt")
    dec = SpeculativeDecoder(target)
    for seq, n in zip(data["train"][:3], data["prompt_lens"]):
        greedy = [t for c in dec.generate(seq[:n], SpecConfig(max_new_tokens=16)) for t in c.tokens]
        assert seq[n:] == greedy
    dec.close()


def test_cached_target_states_are_the_targets_and_live_in_one_buffer():
    """Each sequence's states are computed once, equal the target's own forward, and are kept
    in one buffer allocated up front (per-sequence tensors cached mid-training fragment the
    heap the training steps reuse)."""
    import torch

    from voicestream.distill import TargetStates

    target = random_llama(vocab_size=64, hidden_size=64, num_layers=2, num_heads=4, seed=3).eval()
    rows = [[1, 5, 9, 2, 7, 7, 3, 11, 4], [2, 8, 6, 1, 3], [4, 4, 9]]
    states = TargetStates(target, rows)
    where = states.buffer.data_ptr()
    calls = []
    target.get_decoder().register_forward_hook(lambda *a: calls.append(1))
    first = states.batch([2, 0], 0)
    again = states.batch([0, 1, 2], 0)
    assert len(calls) == 2  # rows 2 and 0 together, then row 1 alone: each row once
    assert states.buffer.data_ptr() == where and states.buffer.shape == (17, 64)
    assert first.shape == (2, 9, 64) and again.shape == (3, 9, 64)
    with torch.no_grad():
        for k, row in enumerate(rows):
            own = target.get_decoder()(input_ids=torch.tensor([row])).last_hidden_state[0]
            torch.testing.assert_close(again[k, : len(row)], own, atol=1e-5, rtol=1e-4)
            assert not again[k, len(row) :].any()  # zero padding
    torch.testing.assert_close(first[0, :3], again[2, :3])


def test_bf16_distillation_computes_the_same_loss_and_keeps_fp32_weights(tmp_path):
    """--bf16 (default where the CPU computes bf16 natively) autocasts the training forwards
    only: the KL matches fp32 closely, gradients reach fp32 weights, cached target states stay
    fp32, and the run reports which it used."""
    import torch

    from voicestream.distill import TargetStates, kl_loss, kl_weights, padded_batch
    from voicestream.spec.feature_draft import FeatureDraft, FeatureDraftConfig

    target = random_llama(vocab_size=64, hidden_size=64, num_layers=2, num_heads=4, seed=3)
    torch.manual_seed(0)
    draft = FeatureDraft(FeatureDraftConfig.for_target(target))
    rows = [[1, 5, 9, 2, 7, 7, 3, 11, 4], [2, 8, 6, 1, 3]]
    batch, mask = padded_batch(rows, 0)
    weights = kl_weights(rows, [2, 2], batch.shape[1])
    losses, grads = {}, {}
    for bf16 in (False, True):
        states = TargetStates(target, rows, bf16).batch([0, 1], 0)
        assert states.dtype == torch.float32
        torch.manual_seed(1)  # the same feature noise and anchors in both precisions
        draft.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = kl_loss(target, draft, None, batch, mask, rows, weights, t_hidden=states, unroll=2)
        loss.backward()
        losses[bf16] = float(loss.detach())
        grads[bf16] = torch.cat([p.grad.flatten() for p in draft.parameters() if p.grad is not None])
        assert all(p.dtype == torch.float32 for p in draft.parameters())
    assert losses[True] == pytest.approx(losses[False], rel=0.05)
    cos = torch.nn.functional.cosine_similarity(grads[True], grads[False], dim=0)
    assert cos > 0.95  # the same direction of descent

    target.save_pretrained(tmp_path / "target")
    for flag, used in (("--bf16", True), ("--no-bf16", False)):
        out = tmp_path / flag.strip("-")
        assert cli_main(["distill", "--target", str(tmp_path / "target"), "--out", str(out), "--n-prompts", "10",
                         "--gen-tokens", "12", "--kind", "feature", "--batch", "4", "--steps", "3",
                         "--eval-tokens", "8", flag]) == 0
        assert json.loads((out / "acceptance.json").read_text())["bf16"] is used


def test_distill_refuses_a_depth_it_would_not_train(tmp_path, capsys):
    """--layers that disagrees with the draft a run would train -- the saved one on --resume,
    an LM draft given to --init-from -- is an error (one line, exit status 2), not silently ignored."""
    target = random_llama(vocab_size=64, hidden_size=64, num_layers=2, num_heads=4, seed=3)
    target.save_pretrained(tmp_path / "target")
    common = ["distill", "--target", str(tmp_path / "target"), "--n-prompts", "10", "--gen-tokens", "8",
              "--batch", "4", "--steps", "1", "--eval-tokens", "4"]
    assert cli_main([*common, "--out", str(tmp_path / "f"), "--kind", "feature", "--layers", "2"]) == 0
    capsys.readouterr()
    assert cli_main([*common, "--out", str(tmp_path / "f"), "--resume", "--layers", "3"]) == 2
    assert "voicestream distill: error: --layers 3" in capsys.readouterr().err
    with pytest.raises(ValueError, match="resumed run continues the saved draft"):  # the library raises it
        cli_main(["--traceback", *common, "--out", str(tmp_path / "f"), "--resume", "--layers", "3"])
    assert cli_main([*common, "--out", str(tmp_path / "f"), "--resume", "--layers", "2", "--steps", "2"]) == 0
    assert cli_main([*common, "--out", str(tmp_path / "lm"), "--layers", "1", "--hidden", "32"]) == 0
    capsys.readouterr()
    assert cli_main([*common, "--out", str(tmp_path / "lm2"), "--init-from", str(tmp_path / "lm" / "draft"),
                     "--layers", "2"]) == 2
    err = capsys.readouterr().err
    assert "only a feature draft can be grown" in err and "Traceback" not in err
