"""Feature-level (EAGLE-style) drafts: cache bookkeeping, exactness, lossless sampling, loading."""
import copy

import pytest
import torch

from voicestream.config import SamplingConfig, SpecConfig
from voicestream.models import random_llama, resolve_draft
from voicestream.spec import GenerationStats, SpeculativeDecoder
from voicestream.spec.compat import IncompatibleModelsError
from voicestream.spec.feature_draft import FeatureDraft, FeatureDraftConfig, shift_features
from voicestream.spec.feature_runner import FeatureDraftRunner
from voicestream.spec.lean_runner import LeanLlamaRunner

from conftest import collect, hf_greedy
from stats_util import chi_square, chi_square_critical


def _pair(seed: int = 2, dtype=torch.float64, layers: int = 1):
    target = random_llama(vocab_size=96, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, seed=seed)
    torch.manual_seed(seed + 1)
    draft = FeatureDraft(FeatureDraftConfig.for_target(target, num_hidden_layers=layers))
    with torch.no_grad():  # random but not tiny: its predictions must matter to the checks below
        for p in draft.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    return target.to(dtype).eval(), draft.to(dtype).eval()


def _reference(target, draft, seq, states):
    """The draft's logits for the token after each position of ``seq``, computed in one
    full-sequence pass with the given state inputs ``states`` (T, H)."""
    emb = target.get_input_embeddings()(torch.tensor([seq]))
    pred = draft(states[None], emb)[0]
    return target.get_output_embeddings()(pred).float()  # runners give float32 logits


@pytest.mark.parametrize("layers", [1, 2])
def test_runner_cache_matches_a_full_pass_through_drafting_rollback_and_verification(layers):
    target, draft = _pair(layers=layers)
    seq = list(range(10, 40))
    with torch.inference_mode():
        t_run = LeanLlamaRunner(target)
        t_run.extend(seq[:20])  # the target has verified 20 positions
        f = t_run.features(20)
        d_run = FeatureDraftRunner(draft, t_run)
        # entries 0..19 all have exact state inputs: one batched forward
        got = d_run.advance_to(seq[:20])
        exact_states = shift_features(f[None])[0]
        ref = _reference(target, draft, seq[:20], exact_states)
        torch.testing.assert_close(got, ref[-1])
        assert d_run.forwards == 1 and all(d_run.exact)
        # drafting ahead: entry 20 still has the target's state at 19; entry 21 runs on the
        # draft's own prediction of the state at 20
        a = d_run.extend([seq[20]])[-1]
        all_exact = torch.cat([torch.zeros_like(f[:1]), f], 0)  # state inputs of entries 0..20
        ref = _reference(target, draft, seq[:21], all_exact)
        torch.testing.assert_close(a, ref[-1])
        b = d_run.extend([seq[21]])[-1]
        pred20 = draft(all_exact[None], target.get_input_embeddings()(torch.tensor([seq[:21]])))[0][-1]
        ref = _reference(target, draft, seq[:22], torch.cat([all_exact, pred20[None]], 0))
        torch.testing.assert_close(b, ref[-1])
        assert d_run.exact[20:] == [True, False]
        # the target verifies 20, 21, 22: the predicted-state entries are recomputed from its states
        t_run.extend(seq[20:23])
        before = d_run.forwards
        got = d_run.advance_to(seq[:23])
        assert d_run.forwards == before + 1 and all(d_run.exact)
        ref = _reference(target, draft, seq[:23], shift_features(t_run.features(23)[None])[0])
        torch.testing.assert_close(got, ref[-1])
        # asking again costs nothing; a rejected branch is rolled back
        assert torch.equal(d_run.advance_to(seq[:23]), got) and d_run.forwards == before + 1
        t_run.rollback(21)
        other = seq[:21] + [77]
        got = d_run.advance_to(other)
        states = torch.cat([shift_features(t_run.features(21)[None])[0], t_run.features(21)[-1:]], 0)
        ref = _reference(target, draft, other, states)
        torch.testing.assert_close(got, ref[-1])


@pytest.mark.parametrize("p,layers", [(0, 1), (5, 1), (17, 1), (5, 2), (17, 3)])
def test_unrolled_training_depths_are_what_decoding_drafts(p, layers):
    """Training-time test: depth s of ``FeatureDraft.unroll`` at position j must be exactly the
    state the decoding cache predicts for the s-th drafted token there (its inputs, and the
    entries it attends to -- in every layer -- built on the draft's own earlier predictions)."""
    target, draft = _pair(layers=layers)
    seq = list(range(10, 40))
    depth = 4
    with torch.inference_mode():
        feats = shift_features(target.get_decoder()(torch.tensor([seq])).last_hidden_state)
        emb = target.get_input_embeddings()(torch.tensor([seq]))
        unrolled = draft.unroll(feats, emb, depth)
        torch.testing.assert_close(unrolled[0][1], draft(feats, emb))  # depth 1 is the teacher-forced pass

        def at(s, j):
            pos, states = unrolled[s - 1]
            return states[0, int((pos == j).nonzero())]

        t_run = LeanLlamaRunner(target)
        t_run.extend(seq[: p + 1])  # verified through position p
        d_run = FeatureDraftRunner(draft, t_run)
        d_run.advance_to(seq[: p + 1])
        for s in range(1, depth + 1):
            d_run.extend([seq[p + s]])  # the s-th drafted token (the true one: the accepted path)
            torch.testing.assert_close(d_run._pred[p + s], at(s, p + s), atol=1e-5, rtol=1e-4)
        assert d_run.exact[p + 1 :] == [True] + [False] * (depth - 1)
        # deeper depths really differ from teacher forcing (else the check above proves nothing)
        assert not torch.allclose(at(1, p + 3), at(3, p + 3), atol=1e-4)
        # a subset of anchors computes the same diagonals
        anchors = torch.tensor([3, p + 4, 29])
        sub = draft.unroll(feats, emb, depth, anchors)
        for s in range(2, depth + 1):
            pos, states = sub[s - 1]
            assert pos.tolist() == (anchors - depth + s).tolist()
            for i, j in enumerate(pos.tolist()):
                torch.testing.assert_close(states[0, i], at(s, j))


@pytest.mark.parametrize("pipelined,layers", [(False, 1), (True, 1), (False, 2)],
                         ids=["sequential", "overlapped", "two-layer-draft"])
def test_greedy_output_is_the_targets_token_for_token(pipelined, layers):
    target, draft = _pair(layers=layers)
    prompt = [5, 6, 7, 8]
    expected = hf_greedy(target, prompt, 48)
    dec = SpeculativeDecoder(target, draft)
    st = GenerationStats()
    try:
        got, _ = collect(dec, prompt, SpecConfig(max_new_tokens=48, pipelined=pipelined), stats=st)
    finally:
        dec.close()
    assert got == expected
    # overlapped (pipelined) decoding verifies drafted tokens only when the draft got there
    # first: timing, so only sequential mode is held to it here (test_overlapped.py slows the target)
    assert pipelined or (st.draft_forwards > 0 and st.drafted_tokens > 0)


def test_a_draft_that_knows_the_target_is_accepted():
    """Sanity of the whole path: a feature draft trained briefly on the target's own states
    gets drafted tokens accepted (a random one gets almost none)."""
    from voicestream.distill import kl_loss

    target, _ = _pair(seed=4, dtype=torch.float32)
    with torch.no_grad():
        target.lm_head.weight.mul_(4.0)  # a confident target, like a trained one
    torch.manual_seed(4)
    draft = FeatureDraft(FeatureDraftConfig.for_target(target))
    fresh = copy.deepcopy(draft)
    torch.manual_seed(0)
    with torch.no_grad():
        data = target.generate(torch.randint(3, 96, (16, 4)), max_new_tokens=40, do_sample=False,
                               attention_mask=torch.ones(16, 4, dtype=torch.long))
    opt = torch.optim.AdamW(draft.parameters(), lr=3e-3)
    draft.train()
    for _ in range(150):
        loss = kl_loss(target, draft, None, data, torch.ones_like(data), [], torch.ones(data.shape, dtype=torch.float32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    draft.eval()
    rates = {}
    for name, d in (("fresh", fresh), ("trained", draft)):
        dec = SpeculativeDecoder(target, d)
        st = GenerationStats()
        for row in data[:4]:
            collect(dec, row[:4].tolist(), SpecConfig(max_new_tokens=40, gamma=4, draft_length="fixed"), stats=st)
        dec.close()
        rates[name] = st.accepted_drafted / st.drafted_tokens
    assert rates["trained"] > 0.3 and rates["trained"] > rates["fresh"] + 0.2, rates


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "overlapped"])
def test_sampling_with_a_feature_draft_reproduces_the_target_distribution(pipelined, monkeypatch):
    if pipelined:  # overlapped: slow the target a little so the draft gets ahead and its tokens are verified
        import time

        forward = LeanLlamaRunner._forward

        def slow_target(self, *args, **kwargs):
            time.sleep(0.001)
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(LeanLlamaRunner, "_forward", slow_target)
    target = random_llama(vocab_size=4, hidden_size=32, num_layers=2, num_heads=2, seed=3)
    with torch.no_grad():
        target.lm_head.weight.mul_(8.0)
    draft = FeatureDraft(FeatureDraftConfig.for_target(target))
    with torch.no_grad():
        for p in draft.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    target, draft = target.eval(), draft.eval()
    prompt, n_tokens, n = [1, 2, 3], 3, 2000
    exact = {}
    with torch.no_grad():
        import itertools

        for seq in itertools.product(range(4), repeat=n_tokens):
            full = prompt + list(seq)
            probs = target(torch.tensor([full[:-1]])).logits[0].float().softmax(-1)
            exact[seq] = float(torch.prod(torch.stack([probs[len(prompt) - 1 + i, x] for i, x in enumerate(seq)])))
    dec = SpeculativeDecoder(target, draft)
    cfg = SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=1.0), gamma=2, draft_length="fixed",
                     max_new_tokens=n_tokens, pipelined=pipelined)
    counts: dict = {}
    st = GenerationStats()
    for seed in range(n):
        out = tuple(t for c in dec.generate(prompt, cfg.with_(seed=seed), stats=st) for t in c.tokens)
        counts[out] = counts.get(out, 0) + 1
    dec.close()
    from collections import Counter

    stat, dof = chi_square(Counter(counts), exact, n)
    assert stat < chi_square_critical(dof), (stat, dof)
    assert 0 < st.accepted_drafted < st.drafted_tokens  # the draft mattered, and was not the target


def test_saved_feature_drafts_load_and_refuse_another_target(tmp_path):
    target, draft = _pair(dtype=torch.float32)
    draft.save_pretrained(tmp_path / "fd")
    loaded = resolve_draft(target, str(tmp_path / "fd"))
    assert isinstance(loaded, FeatureDraft)
    for a, b in zip(draft.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    narrow = random_llama(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, seed=1)
    with pytest.raises(IncompatibleModelsError, match="trained for another target"):
        resolve_draft(narrow, str(tmp_path / "fd"))
    with pytest.raises(IncompatibleModelsError, match="trained for another target"):
        SpeculativeDecoder(narrow, loaded)


def test_a_grown_draft_computes_what_it_grew_from_and_then_trains_its_new_layer():
    """``grown`` adds layers on top that start as no-ops: the deeper draft drafts exactly what
    the trained one did (no acceptance lost when distillation goes deeper), and its new layer
    learns from the first step (its zeroed output projections get gradients)."""
    target, draft = _pair(dtype=torch.float32)
    deeper = draft.grown(2)
    assert len(deeper.layers) == 2 and deeper.config.num_hidden_layers == 2
    seq = list(range(10, 40))
    with torch.no_grad():
        feats = shift_features(target.get_decoder()(torch.tensor([seq])).last_hidden_state)
        emb = target.get_input_embeddings()(torch.tensor([seq]))
        for (_, a), (_, b) in zip(draft.unroll(feats, emb, 3), deeper.unroll(feats, emb, 3)):
            torch.testing.assert_close(a, b)
    deeper.train()
    deeper(feats, emb).pow(2).sum().backward()
    new = deeper.layers[1]
    assert new.o_proj.weight.grad.abs().sum() > 0 and new.down_proj.weight.grad.abs().sum() > 0
    assert deeper.layers[0].q_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cannot grow"):
        deeper.grown(1)


def test_one_layer_drafts_saved_with_top_level_weights_still_load(tmp_path):
    """Drafts saved before ``layers`` existed kept their one layer's weights at the top level
    (the shipped voice's draft among them): they load into ``layers.0``, unchanged."""
    from safetensors.torch import load_file, save_file

    target, draft = _pair(dtype=torch.float32)
    draft.save_pretrained(tmp_path / "fd")
    weights = load_file(tmp_path / "fd" / "model.safetensors")
    legacy = {k.removeprefix("layers.0."): v for k, v in weights.items()}
    assert "q_proj.weight" in legacy and not any(k.startswith("layers.") for k in legacy)
    save_file(legacy, tmp_path / "fd" / "model.safetensors", metadata={"format": "pt"})
    loaded = resolve_draft(target, str(tmp_path / "fd"))
    for (name, a), b in zip(draft.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_batched_decoding_refuses_a_feature_draft_clearly():
    from voicestream.batch import BatchConfig, BatchedDecoder, UnsupportedModelError

    target, draft = _pair(dtype=torch.float32)
    with pytest.raises(UnsupportedModelError, match="per-session decoder"):
        BatchedDecoder(target, draft, config=BatchConfig(max_batch=2))
