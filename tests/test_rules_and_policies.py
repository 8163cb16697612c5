"""Tolerant rules (topk, ssd) and the draft-length policies, through the real decoder."""
import json

import pytest

from voicestream.cli import main as cli_main
from voicestream.config import SamplingConfig, SpecConfig
from voicestream.spec import GenerationStats, SpeculativeDecoder
from voicestream.spec.draft_length import CostModel, DraftLength

from conftest import collect, hf_greedy

PROMPTS = [[5, 6, 7, 8, 9], [100, 43, 17], [1] * 12, [64, 65, 66]]


def _acceptance(dec, cfg):
    total = GenerationStats()
    for p in PROMPTS:
        st = GenerationStats()
        collect(dec, p, cfg, stats=st)
        total.drafted_tokens += st.drafted_tokens
        total.accepted_drafted += st.accepted_drafted
    return total.acceptance_rate


def test_topk_tolerance_accepts_more_and_stays_in_the_targets_top_k(tiny_target, tiny_draft):
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    greedy = SpecConfig(rule="greedy", gamma=4, draft_length="fixed", max_new_tokens=40)
    topk = greedy.with_(rule="topk", topk_tolerance=5)
    assert _acceptance(dec, topk) > _acceptance(dec, greedy) + 0.05
    # topk with k=1 is exactly greedy
    for p in PROMPTS:
        assert collect(dec, p, greedy.with_(rule="topk", topk_tolerance=1))[0] == hf_greedy(tiny_target, p, 40)
    dec.close()


def test_ssd_beta_raises_acceptance_in_the_decoder(tiny_target, tiny_draft):
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    base = SpecConfig(rule="ssd", sampling=SamplingConfig(temperature=1.0), gamma=4, draft_length="fixed", max_new_tokens=40)
    exact = _acceptance(dec, base.with_(beta=0.0))
    loose = _acceptance(dec, base.with_(beta=0.3))
    assert loose > exact + 0.05
    # beta = 0 is the lossless rule, token for token under the same seed
    for p in PROMPTS:
        assert collect(dec, p, base.with_(beta=0.0))[0] == collect(dec, p, base.with_(rule="sampling"))[0]
    dec.close()


def test_heuristic_draft_length_grows_and_shrinks():
    ctl = DraftLength(SpecConfig(gamma=4, gamma_min=2, gamma_max=8, draft_length="heuristic"))
    ctl.update(4, 4)
    assert ctl.gamma == 6
    assert ctl.peek_full(6) == 8
    ctl.update(6, 6)
    ctl.update(8, 8)
    assert ctl.gamma == 8  # capped
    for _ in range(10):
        ctl.update(0, 8)
    assert ctl.gamma == 2  # floored
    fixed = DraftLength(SpecConfig(gamma=3, draft_length="fixed"))
    fixed.update(0, 3)
    assert fixed.gamma == 3


def test_cost_policy_drafts_long_where_the_target_is_dear_and_not_at_all_where_it_is_cheap():
    """GPU-like costs (target = 20 draft steps, rows free) favour long drafts; CPU-like ones
    (target = 3 draft steps, each row a third of a step) a plain step, probed now and then."""
    ctl = DraftLength(SpecConfig(gamma=4, gamma_min=1, gamma_max=8, draft_length="cost"))
    assert ctl.gamma == 0  # first a plain step, to time it
    ctl.timed_plain(0.020)
    assert ctl.gamma == 1  # then a draft, to time that
    for _ in range(6):
        ctl.timed_chunk(draft_s=0.001 * ctl.gamma, drafted=ctl.gamma, verify_s=0.020, rows=ctl.gamma + 1,
                        accepted=ctl.gamma - (ctl.gamma > 2))  # ~0.8 acceptance
    assert ctl.gamma >= 4
    # acceptance collapses: drafts shrink
    for _ in range(6):
        ctl.timed_chunk(draft_s=0.001 * ctl.gamma, drafted=ctl.gamma, verify_s=0.020, rows=ctl.gamma + 1, accepted=0)
    assert ctl.gamma <= 2

    cpu = CostModel(probe_every=4)
    cpu.observe_plain(0.0015)
    cpu.observe_chunk(draft_s=0.002, drafted=4, verify_s=0.0035, rows=5, accepted=1)
    choices = [cpu.choose(1, 8) for _ in range(4)]
    assert choices == [0, 0, 0, 1]  # plain, then a 1-token probe
    cpu.observe_chunk(draft_s=0.0005, drafted=1, verify_s=0.0025, rows=2, accepted=0)  # the probe fails
    choices = [cpu.choose(1, 8) for _ in range(8)]
    assert choices == [0] * 7 + [1]  # ... so the next one comes after twice as many plain steps
    assert cpu.rate(0) > cpu.rate(1) > cpu.rate(4)


def test_cost_policy_is_sequential_only():
    with pytest.raises(ValueError, match="sequential"):
        SpecConfig(draft_length="cost", pipelined=True)


def test_confidence_policy_stops_drafting_early(tiny_target, tiny_draft):
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    stats = {}
    for threshold in (0.0, 0.9):
        cfg = SpecConfig(gamma=4, gamma_max=8, draft_length="confidence", confidence_threshold=threshold, max_new_tokens=40)
        st = GenerationStats()
        collect(dec, PROMPTS[0], cfg, stats=st)
        stats[threshold] = st.drafted_tokens / st.verify_steps
    assert stats[0.0] == pytest.approx(8, abs=1.5)  # never stops early: full gamma_max chunks
    assert stats[0.9] < stats[0.0] - 1
    dec.close()


def test_config_validation():
    with pytest.raises(ValueError, match="unknown acceptance rule"):
        SpecConfig(rule="nope")
    with pytest.raises(ValueError, match="needs temperature > 0"):
        SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=0.0))
    with pytest.raises(ValueError, match="decodes by argmax"):
        SpecConfig(rule="greedy", sampling=SamplingConfig(temperature=0.7))
    with pytest.raises(ValueError, match="gamma"):
        SpecConfig(gamma=0)
    with pytest.raises(ValueError, match="beta"):
        SpecConfig(rule="ssd", sampling=SamplingConfig(temperature=1.0), beta=-1)


def test_bench_decode_cli_reports_every_figure(capsys):
    args = [
        "bench", "decode", "--json", "--prompts", "1", "--prompt-len", "8", "--max-new-tokens", "24",
        "--vocab", "256", "--hidden", "64", "--layers", "4", "--heads", "4", "--refine-scale", "0.1",
    ]
    assert cli_main(args) == 0
    report = json.loads(capsys.readouterr().out)
    for key in (
        "plain_tokens_per_s", "hf_assisted_tokens_per_s", "ours_tokens_per_s", "ours_pipelined_tokens_per_s",
        "mean_accepted_per_target_forward", "speedup_vs_plain", "speedup_vs_hf_assisted",
    ):
        assert isinstance(report[key], (int, float)) and report[key] > 0, key
    assert all(report["modes"]["greedy"]["greedy_outputs_identical"].values())
    assert report["mean_accepted_per_target_forward"] > 1.0
