"""Greedy speculative decoding must reproduce the target's greedy decoding token for token."""
import copy

import pytest

from voicestream.config import SamplingConfig, SpecConfig
from voicestream.models import random_llama
from voicestream.spec import GenerationStats, SpeculativeDecoder

from conftest import collect, hf_greedy

PROMPTS = [[5, 6, 7, 8, 9], [100, 3 + 40, 17], [1] * 12]
# pipelined runs always speculate (threshold 0) unless a test says otherwise
ALWAYS = 0.0


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
@pytest.mark.parametrize("gamma", [1, 3, 8])
def test_greedy_matches_generate(tiny_target, tiny_draft, gamma, pipelined):
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    cfg = SpecConfig(gamma=gamma, gamma_max=max(gamma, 8), draft_length="fixed", pipelined=pipelined, max_new_tokens=48, speculate_threshold=ALWAYS)
    for prompt in PROMPTS:
        ref = hf_greedy(tiny_target, prompt, 48)
        stats = GenerationStats()
        ours, chunks = collect(dec, prompt, cfg, stats=stats)
        assert ours == ref, f"prompt {prompt}"
        assert chunks[-1].finish_reason == "length"
        # speculation actually happened: more than one token per target forward
        assert stats.mean_accepted_per_target_forward > 1.2
    dec.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_greedy_with_poor_draft_and_adaptive_length(tiny_target, pipelined):
    """An unrelated draft is rejected constantly: every correction path must stay exact."""
    bad_draft = random_llama(vocab_size=128, hidden_size=32, num_layers=1, num_heads=2, seed=99)
    dec = SpeculativeDecoder(tiny_target, bad_draft)
    for policy in ("heuristic", "confidence") + (() if pipelined else ("cost",)):
        for threshold in (ALWAYS, 0.25):  # always speculate / speculate while it pays
            cfg = SpecConfig(
                gamma=4, draft_length=policy, pipelined=pipelined, max_new_tokens=40, speculate_threshold=threshold
            )
            for prompt in PROMPTS:
                assert collect(dec, prompt, cfg)[0] == hf_greedy(tiny_target, prompt, 40)
    dec.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_greedy_repetition_penalty_matches_generate(tiny_target, tiny_draft, pipelined):
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    cfg = SpecConfig(
        sampling=SamplingConfig(temperature=0.0, repetition_penalty=1.3),
        gamma=4,
        pipelined=pipelined,
        max_new_tokens=40,
        speculate_threshold=ALWAYS,
    )
    for prompt in PROMPTS:
        ref = hf_greedy(tiny_target, prompt, 40, repetition_penalty=1.3)
        assert collect(dec, prompt, cfg)[0] == ref
        # and the penalty changed something, or this test would prove nothing
        assert ref != hf_greedy(tiny_target, prompt, 40)
    dec.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
@pytest.mark.parametrize("gamma", [3, 8])
def test_eos_inside_an_accepted_chunk(tiny_target, gamma, pipelined):
    prompt = [5, 6, 7, 8, 9]
    free = hf_greedy(tiny_target, prompt, 30)
    # pick an EOS id that first appears mid-way, off any chunk boundary
    pos = next(i for i in range(5, len(free)) if free[i] not in free[:i] and i % gamma != 0)
    eos = free[pos]
    target = copy.deepcopy(tiny_target)
    target.config.eos_token_id = eos
    target.generation_config.eos_token_id = eos
    draft = copy.deepcopy(target)  # identical draft: every chunk is fully accepted
    ref = hf_greedy(target, prompt, 30)
    assert ref[-1] == eos and len(ref) == pos + 1
    dec = SpeculativeDecoder(target, draft)
    stats = GenerationStats()
    cfg = SpecConfig(
        gamma=gamma, gamma_max=8, draft_length="fixed", pipelined=pipelined, max_new_tokens=30, speculate_threshold=ALWAYS
    )
    ours, chunks = collect(dec, prompt, cfg, stats=stats)
    assert ours == ref
    assert chunks[-1].finish_reason == "stop" and chunks[-1].stop_token == eos
    assert eos not in [t for c in chunks for t in c.tokens]
    assert stats.acceptance_rate == 1.0  # the EOS arrived as an accepted drafted token
    dec.close()


def test_max_new_tokens_is_exact(tiny_target, tiny_draft):
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    for n in (1, 2, 7, 13):
        for pipelined in (False, True):
            cfg = SpecConfig(gamma=5, pipelined=pipelined, max_new_tokens=n, speculate_threshold=ALWAYS)
            tokens, chunks = collect(dec, [5, 6, 7], cfg)
            assert len(tokens) == n and chunks[-1].finish_reason == "length"
            assert [c.start for c in chunks] == [sum(len(c.tokens) for c in chunks[:i]) for i in range(len(chunks))]
    dec.close()


def test_plain_decoding_matches_generate(tiny_target):
    dec = SpeculativeDecoder(tiny_target)
    stats = GenerationStats()
    tokens, _ = collect(dec, PROMPTS[0], SpecConfig(max_new_tokens=20), stats=stats)
    assert tokens == hf_greedy(tiny_target, PROMPTS[0], 20)
    assert stats.mean_accepted_per_target_forward == 1.0


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_acceptance_by_depth_accounts_for_every_drafted_token(tiny_target, tiny_draft, pipelined):
    """Per-depth acceptance (what distill reports) adds up to the totals, and a draft that is
    the target itself is accepted at every depth."""
    for draft, perfect in ((tiny_draft, False), (copy.deepcopy(tiny_target), True)):
        dec = SpeculativeDecoder(tiny_target, draft)
        cfg = SpecConfig(gamma=4, draft_length="fixed", pipelined=pipelined, max_new_tokens=40, speculate_threshold=ALWAYS)
        stats = GenerationStats()
        collect(dec, PROMPTS[0], cfg, stats=stats)
        dec.close()
        assert sum(stats.drafted_at_depth.values()) == stats.drafted_tokens > 0
        assert sum(stats.accepted_at_depth.values()) == stats.accepted_drafted
        by_depth = stats.accepted_by_depth()
        # every depth up to gamma (a pipelined draft may run one ahead of the chunk it verifies)
        assert sorted(by_depth) == list(range(1, max(by_depth) + 1)) and max(by_depth) >= 4
        if perfect:
            assert all(r == 1.0 for r in by_depth.values())
        else:
            assert all(0.0 <= r <= 1.0 for r in by_depth.values()) and min(by_depth.values()) < 1.0
        assert stats.as_dict()["accepted_by_depth"] == {d: round(r, 4) for d, r in by_depth.items()}


def test_measure_acceptance_totals_its_prompts(tiny_target, tiny_draft):
    """The figure distillation reports is new tokens over target forwards summed over all
    prompts (GenerationStats.add), not a mean of per-prompt ratios; a draft that is the
    target itself is accepted at every depth, so each forward commits gamma + 1 tokens."""
    from voicestream.spec.measure import measure_acceptance

    prompts = PROMPTS[:2]
    report = measure_acceptance(tiny_target, tiny_draft, prompts, max_new_tokens=30, gamma=4)
    singles = [measure_acceptance(tiny_target, tiny_draft, [p], max_new_tokens=30, gamma=4) for p in prompts]
    assert report["prompts"] == 2 and report["per_prompt"] == [s["per_prompt"][0] for s in singles]
    assert report["new_tokens"] == sum(s["new_tokens"] for s in singles) == 60
    assert report["target_forwards"] == sum(s["target_forwards"] for s in singles)
    assert report["mean_accepted_per_target_forward"] == round(60 / report["target_forwards"], 3)
    perfect = measure_acceptance(tiny_target, copy.deepcopy(tiny_target), prompts, max_new_tokens=30, gamma=4)
    assert perfect["draft_acceptance_rate"] == 1.0 and set(perfect["accepted_by_depth"].values()) == {1.0}
    assert perfect["mean_accepted_per_target_forward"] > report["mean_accepted_per_target_forward"]
