"""Jump-forward: tokens a constraint forces join the sequence without a draft or a forward
of their own. Outputs must not change (greedy: token for token; sampling: in distribution),
only the work to produce them."""
from collections import Counter

import pytest
import torch

from voicestream.batch import BatchedDecoder
from voicestream.config import SamplingConfig, SpecConfig
from voicestream.models import random_llama, refined_pair
from voicestream.spec import SpeculativeDecoder
from voicestream.spec.constraint import forced_run
from voicestream.spec.stats import GenerationStats

from conftest import collect
from stats_util import chi_square, chi_square_critical, total_variation
from test_batch_decoding import run_manual
from test_sampling_distribution import VOCAB, _exact_distribution, _sample

V = 128
GREEDY = SamplingConfig(temperature=0.0)


class Chains:
    """A grammar with forced runs: after a token in ``forced`` its successor must follow
    (chains like 0 -> 8 -> 16 ...); anything goes elsewhere. The state is the last token."""

    def __init__(self, forced: dict[int, int], vocab: int) -> None:
        self.map = forced
        self.vocab = vocab

    def initial(self):
        return None

    def step(self, state, token):
        return int(token)

    def allowed(self, state):
        if state in self.map:
            m = torch.zeros(self.vocab, dtype=torch.bool)
            m[self.map[state]] = True
            return m
        return torch.ones(self.vocab, dtype=torch.bool)

    def forced(self, state):
        return self.map.get(state)


CHAINS = Chains({t: t + 8 for t in range(0, 96, 8)}, V)


@pytest.fixture(scope="module")
def pair():
    t, d = refined_pair(draft_layers=1, refine_scale=0.1, vocab_size=V, hidden_size=64, num_layers=4,
                        num_heads=4, num_kv_heads=2, seed=1)
    return t.double(), d.double()


def test_forced_run_follows_the_chain_and_stops_at_a_choice_a_stop_or_the_limit():
    assert forced_run(CHAINS, 80, frozenset(), 99) == ([88, 96], 96)
    assert forced_run(CHAINS, 80, frozenset({88}), 99) == ([88], 88)
    assert forced_run(CHAINS, 0, frozenset(), 3) == ([8, 16, 24], 24)
    assert forced_run(CHAINS, 5, frozenset(), 99) == ([], 5)
    assert forced_run(None, 0, frozenset(), 99) == ([], 0)


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_greedy_tokens_are_unchanged_and_forced_tokens_cost_no_forward(pair, pipelined):
    target, draft = pair
    cfg = SpecConfig(gamma=4, max_new_tokens=80, stop_ids=[-1], pipelined=pipelined, speculate_threshold=0.0,
                     draft_length="fixed")
    prompts = [[3, 4, 5], [72], [11, 0]]  # [72]: ends in a forced run; [11, 0]: starts with one
    forced_seen = 0
    work = Counter()
    for prompt in prompts:
        plain_off, _ = collect(SpeculativeDecoder(target), prompt, cfg.with_(jump_forward=False), constraint=CHAINS)
        st_off, st_on, st_plain = GenerationStats(), GenerationStats(), GenerationStats()
        plain_on, _ = collect(SpeculativeDecoder(target), prompt, cfg, constraint=CHAINS, stats=st_plain)
        spec_off, _ = collect(SpeculativeDecoder(target, draft), prompt, cfg.with_(jump_forward=False),
                              constraint=CHAINS, stats=st_off)
        spec_on, chunks = collect(SpeculativeDecoder(target, draft), prompt, cfg, constraint=CHAINS, stats=st_on)
        assert plain_on == plain_off == spec_off == spec_on
        n_forced = sum(1 for a in [prompt[-1]] + spec_on[:-1] if a in CHAINS.map)
        forced_seen += n_forced
        # plain decoding pays one forward per free token only
        assert st_plain.target_forwards == len(spec_on) - n_forced
        work.update({"on_target": st_on.target_forwards, "off_target": st_off.target_forwards,
                     "on_draft": st_on.draft_forwards, "off_draft": st_off.draft_forwards})
        if prompt[-1] in CHAINS.map:  # the forced run after the prompt comes first, before any forward
            assert chunks[0].tokens == forced_run(CHAINS, prompt[-1], frozenset(), 99)[0]
    assert forced_seen >= 5, "the test needs generations that hit forced runs"
    # forced tokens ride along for free: fewer target forwards, and no draft forward of their own
    assert work["on_target"] < work["off_target"] and work["on_draft"] < work["off_draft"], work


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_acceptance_by_depth_counts_only_what_the_draft_chose(pair, pipelined):
    """Forced tokens that join a chunk are verified (totals) but are not a draft depth:
    per-depth figures stop at gamma however long the forced runs are."""
    target, draft = pair
    gamma = 3
    cfg = SpecConfig(gamma=gamma, max_new_tokens=80, stop_ids=[-1], pipelined=pipelined, speculate_threshold=0.0,
                     draft_length="fixed")
    stats = GenerationStats()
    for prompt in ([3, 4, 5], [11, 0], [40, 41], [72]):
        collect(SpeculativeDecoder(target, draft), prompt, cfg, constraint=CHAINS, stats=stats)
    longest = max(stats.committed_histogram)
    assert longest > gamma + 1, "the test needs chunks lengthened by forced runs"
    assert max(stats.drafted_at_depth) <= gamma + int(pipelined)
    assert sum(stats.drafted_at_depth.values()) < stats.drafted_tokens  # forced candidates are in the totals only
    assert all(0.0 <= r <= 1.0 for r in stats.accepted_by_depth().values())


def test_record_step_skips_forced_candidates_when_numbering_depths():
    stats = GenerationStats()
    stats.record_step(5, 3, 4, [True, False, True, False, True])  # 3 drafted; the first two of them accepted
    assert dict(stats.drafted_at_depth) == {1: 1, 2: 1, 3: 1}
    assert dict(stats.accepted_at_depth) == {1: 1, 2: 1, 3: 0}
    assert (stats.drafted_tokens, stats.accepted_drafted) == (5, 3)
    stats.record_step(2, 2, 3)  # no flags: every candidate drafted
    assert stats.accepted_by_depth() == {1: 1.0, 2: 1.0, 3: 0.0}


def test_batched_sessions_equal_single_sessions_with_jump_forward(pair):
    target, draft = pair
    single = SpeculativeDecoder(target, draft)
    cfgs = [
        SpecConfig(gamma=3, max_new_tokens=60, stop_ids=[-1]),
        SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=0.9, top_k=40), seed=1, max_new_tokens=50,
                   stop_ids=[-1]),
        SpecConfig(rule="ssd", beta=0.3, sampling=SamplingConfig(temperature=1.0), seed=2, max_new_tokens=45,
                   stop_ids=[-1]),
        SpecConfig(gamma=5, max_new_tokens=40, stop_ids=[-1]),
    ]
    prompts = [[3, 4, 5], [72], [11, 0], [40, 41]]
    dec = BatchedDecoder(target, draft, autostart=False)
    outs, _ = run_manual(dec, [(i, p, c, CHAINS) for i, (p, c) in enumerate(zip(prompts, cfgs))])
    for p, c, out in zip(prompts, cfgs, outs):
        assert out == collect(single, p, c, constraint=CHAINS)[0]
        assert all(CHAINS.allowed(a)[b] for a, b in zip([p[-1]] + out, out))
    plain = BatchedDecoder(target, None, autostart=False)
    outs, stats = run_manual(plain, [(0, [72], cfgs[0], CHAINS), (2, [3, 4, 5], cfgs[3], CHAINS)])
    assert outs == [collect(SpeculativeDecoder(target), [72], cfgs[0], constraint=CHAINS)[0],
                    collect(SpeculativeDecoder(target), [3, 4, 5], cfgs[3], constraint=CHAINS)[0]]
    assert stats[0].target_forwards < len(outs[0])  # forced tokens rode along with free ones


# --- sampling stays lossless with forced tokens in the chunks ------------------------------------
N_TOKENS = 4
SMALL = Chains({0: 3}, VOCAB)  # 0 must be followed by 3


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_speculative_sampling_with_jump_forward_reproduces_the_constrained_target(pipelined):
    target = random_llama(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, seed=3)
    draft = random_llama(vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2, seed=4)
    with torch.no_grad():
        target.lm_head.weight.mul_(8.0)
        draft.lm_head.weight.mul_(4.0)
    exact = _exact_distribution(target, SamplingConfig(temperature=1.0), n_tokens=N_TOKENS, constraint=SMALL)
    assert sum(p for s, p in exact.items() if 0 in s[:-1]) > 0.2, "forced runs must be common enough to matter"
    dec = SpeculativeDecoder(target, draft, check=False)
    cfg = SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=1.0), gamma=1 if pipelined else 2,
                     draft_length="fixed", pipelined=pipelined, speculate_threshold=0.0, max_new_tokens=N_TOKENS)
    n = 2000
    counts = _sample(dec, cfg, n, n_tokens=N_TOKENS, constraint=SMALL)
    stat, dof = chi_square(counts, exact, n)
    assert stat < chi_square_critical(dof), (stat, dof, total_variation(counts, exact, n))
    dec.close()


# --- the voice: copied prompt characters are forced ----------------------------------------------
def test_voice_emits_the_first_words_characters_before_any_forward():
    from voicestream.voice.masking import TextFollowing
    from voicestream.voice.presets import PRESETS, build_model
    from voicestream.voice.vocab import VoiceVocab

    v = VoiceVocab()
    tf = TextFollowing(v, max_unit_frames=4)
    target = build_model(PRESETS["tiny"][0], v, seed=5)
    draft = build_model(PRESETS["tiny"][0], v, seed=6)
    prompt = v.prompt_for("Thanks, nine cats.")
    cfg = SpecConfig(gamma=4, max_new_tokens=400, stop_ids=(v.audio_end_id,))
    st_on, st_off = GenerationStats(), GenerationStats()
    on, chunks = collect(SpeculativeDecoder(target, draft), prompt, cfg, constraint=tf, stats=st_on)
    off, _ = collect(SpeculativeDecoder(target, draft), prompt, cfg.with_(jump_forward=False), constraint=tf,
                     stats=st_off)
    assert on == off
    assert chunks[0].tokens == [v.word_id, *v.text_ids("thanks,", normalize=False)]  # up to the word boundary
    assert st_on.target_forwards < st_off.target_forwards
    v.grammar.run(prompt + on)  # strict: every token legal
