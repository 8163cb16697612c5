"""The oracle draft: a free draft replaying recorded greedy tokens, for the speed ceiling."""
import pytest

from voicestream.config import SpecConfig
from voicestream.spec import GenerationStats, SpeculativeDecoder
from voicestream.spec.oracle_draft import OracleDraft, parse_oracle

from conftest import collect, hf_greedy

PROMPTS = [[5, 6, 7, 8, 9], [100, 43, 17], [1] * 12]
N = 48


def test_parse_oracle():
    assert parse_oracle("oracle") == 1.0 and parse_oracle("oracle:0.5") == 0.5 and parse_oracle("oracle:0") == 0.0
    assert parse_oracle("self:1") is None and parse_oracle("runs/draft") is None
    for bad in ("oracle:1.5", "oracle:-0.1", "oracle:half"):
        with pytest.raises(ValueError, match="accuracy"):
            parse_oracle(bad)


def _decode(target, oracle, gamma=4):
    """Speculative greedy decoding of every prompt with ``oracle``; (outputs, stats per prompt)."""
    dec = SpeculativeDecoder(target, oracle)
    cfg = SpecConfig(gamma=gamma, gamma_max=max(gamma, 8), draft_length="fixed", max_new_tokens=N)
    outs, stats = [], []
    for prompt in PROMPTS:
        st = GenerationStats()
        outs.append(collect(dec, prompt, cfg, stats=st)[0])
        stats.append(st.as_dict())
    dec.close()
    return outs, stats


def _recorded(target, accuracy):
    oracle = OracleDraft(target, accuracy, seed=3)
    refs = [hf_greedy(target, p, N) for p in PROMPTS]
    for prompt, ref in zip(PROMPTS, refs):
        oracle.record(prompt + ref)
    return oracle, refs


def test_a_perfect_oracle_is_always_accepted(tiny_target):
    oracle, refs = _recorded(tiny_target, 1.0)
    outs, stats = _decode(tiny_target, oracle)
    assert outs == refs
    for st in stats:
        assert st["acceptance_rate"] == 1.0
        assert st["mean_accepted_per_target_forward"] > 4  # gamma 4: four drafted + one bonus per forward


def test_a_wrong_oracle_is_never_accepted(tiny_target):
    oracle, refs = _recorded(tiny_target, 0.0)
    outs, stats = _decode(tiny_target, oracle)
    assert outs == refs  # greedy speculation stays exact whatever the draft proposes
    assert all(st["accepted_drafted"] == 0 and st["drafted_tokens"] > 0 for st in stats)


def test_oracle_accuracy_sets_first_token_acceptance(tiny_target):
    oracle, refs = _recorded(tiny_target, 0.5)
    outs, stats = _decode(tiny_target, oracle, gamma=2)
    assert outs == refs
    depth1 = [st["accepted_by_depth"][1] for st in stats]
    assert 0.3 < sum(depth1) / len(depth1) < 0.7, depth1
    # a draw is fixed per position: the same run again proposes and accepts the same
    again = _decode(tiny_target, oracle, gamma=2)[1]
    assert [(st["accepted_drafted"], st["accepted_by_depth"]) for st in again] == [
        (st["accepted_drafted"], st["accepted_by_depth"]) for st in stats]


def test_off_the_record_the_oracle_knows_nothing(tiny_target):
    oracle, _ = _recorded(tiny_target, 1.0)
    runner = oracle.runner_for(type("T", (), {"device": "cpu"})())
    logits = runner.advance_to([7, 7, 7, 7], span=(10, 20))  # no record starts like this
    assert (logits[10:20] == 0).all() and logits[:10].isinf().all() and logits[20:].isinf().all()
    known = runner.advance_to(PROMPTS[0], span=None)
    assert int(known.argmax()) == hf_greedy(tiny_target, PROMPTS[0], 1)[0]
