"""Lossless speculative sampling must reproduce the target's sampling distribution."""
import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from voicestream.config import SamplingConfig, SpecConfig
from voicestream.models import random_llama
from voicestream.spec import SpeculativeDecoder, acceptance
from voicestream.spec.acceptance import VerifyInput, verify
from voicestream.spec.constraint import constrain
from voicestream.spec.logits import to_probs
from voicestream.spec.randomness import DRAFT, Randomness

from stats_util import chi_square, chi_square_critical, random_distribution, total_variation

V = 6


def _one_step_outcomes(p: np.ndarray, q: np.ndarray, cfg: SpecConfig, n: int) -> Counter:
    """Draft x ~ q, verify against p (raw logits log p, so processing is the identity)."""
    logits = torch.tensor(np.log(p), dtype=torch.float32)[None]
    qt = torch.tensor(q, dtype=torch.float32)[None]
    out = Counter()
    for seed in range(n):
        rng = Randomness(seed)
        x = rng.sample(qt[0], DRAFT, 0, 0)
        verdict = verify(VerifyInput([x], qt, logits, None, 0, 0, False), cfg, rng)
        out[x if verdict.accepted else verdict.token] += 1
    return out


SAMPLING = SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=1.0))


def test_sampling_rule_reproduces_target_distribution():
    rng = np.random.default_rng(0)
    n = 8000
    for trial in range(3):
        p, q = random_distribution(rng, V, 1.5), random_distribution(rng, V, 1.5)
        counts = _one_step_outcomes(p, q, SAMPLING, n)
        stat, dof = chi_square(counts, dict(enumerate(p)), n)
        assert stat < chi_square_critical(dof), (trial, stat, dof)
        # and the draft distribution is clearly not what came out
        assert chi_square(counts, dict(enumerate(q)), n)[0] > chi_square_critical(dof)


def test_ssd_beta_zero_is_sampling_and_beta_raises_acceptance():
    rng = np.random.default_rng(1)
    p, q = random_distribution(rng, V, 1.5), random_distribution(rng, V, 1.5)
    n = 4000
    exact = _one_step_outcomes(p, q, SAMPLING, n)
    assert _one_step_outcomes(p, q, SAMPLING.with_(rule="ssd", beta=0.0), n) == exact
    loose = _one_step_outcomes(p, q, SAMPLING.with_(rule="ssd", beta=0.5), n)
    stat, dof = chi_square(loose, dict(enumerate(p)), n)
    assert stat > chi_square_critical(dof), "beta=0.5 should visibly pull the output towards the draft"
    # acceptance: the drafted token survives more often
    logits = torch.tensor(np.log(p), dtype=torch.float32)[None]
    qt = torch.tensor(q, dtype=torch.float32)[None]

    def rate(cfg):
        acc = 0
        for seed in range(2000):
            r = Randomness(seed)
            x = r.sample(qt[0], DRAFT, 0, 0)
            acc += verify(VerifyInput([x], qt, logits, None, 0, 0, False), cfg, r).accepted
        return acc / 2000

    assert rate(SAMPLING.with_(rule="ssd", beta=0.3)) > rate(SAMPLING) + 0.05


def test_wrong_rule_is_caught():
    """The same statistic rejects a rule that accepts every drafted token."""
    rng = np.random.default_rng(2)
    p, q = random_distribution(rng, V, 1.5), random_distribution(rng, V, 1.5)
    original = acceptance.RULES["sampling"]
    acceptance.RULES["sampling"] = lambda inp, cfg, r: acceptance.Verdict(len(inp.candidates), None)
    try:
        counts = _one_step_outcomes(p, q, SAMPLING, 4000)
    finally:
        acceptance.RULES["sampling"] = original
    stat, dof = chi_square(counts, dict(enumerate(p)), 4000)
    assert stat > chi_square_critical(dof)


# --- end to end: the decoder's first tokens follow the processed target distribution ---------

VOCAB = 4
PROMPT = [1, 2, 3]
N_TOKENS = 3  # three tokens: covers chunk verification, corrections, bonus and pipelined pre-checks


@pytest.fixture(scope="module")
def e2e_models():
    target = random_llama(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, seed=3)
    draft = random_llama(vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2, seed=4)
    with torch.no_grad():  # sharpen the target so it differs clearly from the draft
        target.lm_head.weight.mul_(8.0)
        draft.lm_head.weight.mul_(4.0)
    return target, draft


def _exact_distribution(target, cfg: SamplingConfig, *, n_tokens: int = N_TOKENS, constraint=None) -> dict:
    """P(x1..xn) under the processed target, by enumeration (repetition penalty included;
    ``constraint``: a grammar whose state is the last token, masking each step; its greedy
    rows put all mass on the best legal id)."""
    dist = {}
    with torch.no_grad():
        for seq in itertools.product(range(VOCAB), repeat=n_tokens):
            full = PROMPT + list(seq)
            logits = target(torch.tensor([full[:-1]])).logits[0].float()
            prob = 1.0
            for i, x in enumerate(seq):
                seen = torch.zeros(VOCAB, dtype=torch.bool)
                seen[full[: len(PROMPT) + i]] = True
                row = logits[len(PROMPT) - 1 + i]
                row = constrain(row, constraint, full[len(PROMPT) - 1 + i])  # legal ids; greedy rows
                prob *= float(to_probs(row, cfg, seen)[x])
            if prob > 0:
                dist[seq] = prob
    return dist


def _sample(decoder, cfg: SpecConfig, n: int, *, n_tokens: int = N_TOKENS, constraint=None) -> Counter:
    """How often each continuation of PROMPT comes out over seeds 0..n-1."""
    counts = Counter()
    for seed in range(n):
        out = decoder.generate(PROMPT, cfg.with_(seed=seed, max_new_tokens=n_tokens), constraint=constraint)
        counts[tuple(t for c in out for t in c.tokens)] += 1
    return counts


SAMPLERS = {
    "plain-temperature": SamplingConfig(temperature=1.0),
    "topk-topp-penalty": SamplingConfig(temperature=0.8, top_k=3, top_p=0.9, repetition_penalty=1.5),
}


MODES = {
    "sequential": dict(gamma=2, draft_length="fixed"),
    # pipelined: gamma=1 gives 2-token chunks, so the 3rd token goes through speculation
    "pipelined": dict(gamma=1, draft_length="fixed", pipelined=True, speculate_threshold=0.0),
    # the cost policy's first step is the target's alone (to time it), the next a draft
    "cost-policy": dict(gamma=1, draft_length="cost"),
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_decoder_matches_target_sampling_distribution(e2e_models, sampler, mode):
    target, draft = e2e_models
    scfg = SAMPLERS[sampler]
    exact = _exact_distribution(target, scfg)
    dec = SpeculativeDecoder(target, draft, check=False)
    cfg = SpecConfig(rule="sampling", sampling=scfg, **MODES[mode])
    n = 2000
    counts = _sample(dec, cfg, n)
    stat, dof = chi_square(counts, exact, n)
    assert stat < chi_square_critical(dof), (stat, dof, total_variation(counts, exact, n))
    # sanity: the draft alone would not pass (otherwise the test could not tell)
    draft_counts = _sample(SpeculativeDecoder(draft), SpecConfig(rule="sampling", sampling=scfg), n)
    assert chi_square(draft_counts, exact, n)[0] > chi_square_critical(dof)
    dec.close()


def test_decoder_with_wrong_rule_fails_the_same_test(e2e_models):
    target, draft = e2e_models
    scfg = SAMPLERS["plain-temperature"]
    exact = _exact_distribution(target, scfg)
    dec = SpeculativeDecoder(target, draft, check=False)
    original = acceptance.RULES["sampling"]
    acceptance.RULES["sampling"] = lambda inp, cfg, r: acceptance.Verdict(
        len(inp.candidates), None if not inp.emit_bonus else 0
    )
    try:
        counts = _sample(dec, SpecConfig(rule="sampling", sampling=scfg, gamma=2, draft_length="fixed"), 2000)
    finally:
        acceptance.RULES["sampling"] = original
    stat, dof = chi_square(counts, exact, 2000)
    assert stat > chi_square_critical(dof)


def test_seeded_sampling_is_reproducible_across_modes_and_runs(tiny_target, tiny_draft):
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    cfg = SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=0.9, top_k=20), seed=7, max_new_tokens=40)
    a = [t for c in dec.generate([5, 6, 7], cfg) for t in c.tokens]
    b = [t for c in dec.generate([5, 6, 7], cfg) for t in c.tokens]
    c_ = [t for c in dec.generate([5, 6, 7], cfg.with_(seed=8)) for t in c.tokens]
    assert a == b and a != c_
    pa = [t for c in dec.generate([5, 6, 7], cfg.with_(pipelined=True)) for t in c.tokens]
    pb = [t for c in dec.generate([5, 6, 7], cfg.with_(pipelined=True)) for t in c.tokens]
    assert pa == pb
    dec.close()
