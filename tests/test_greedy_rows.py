"""Decided rows: a constraint may ask for the best legal id (greedy rows) or another
deterministic rule (a field-wise median) at some positions while the rest is sampled (a
voice's phone plan greedy, its sound sampled). Speculative sampling must stay lossless
with respect to the target decoded that way, in every decoder."""
import pytest
import torch

from voicestream.batch import BatchedDecoder
from voicestream.config import SamplingConfig, SpecConfig
from voicestream.spec import SpeculativeDecoder
from voicestream.spec.constraint import apply_mask, argmax_pick, constrain, masks_along
from voicestream.spec.field_median import FieldMedian

from conftest import collect
from stats_util import chi_square, chi_square_critical, total_variation
from test_batch_decoding import pair64, run_manual  # noqa: F401  (fixture)
from test_sampling_distribution import N_TOKENS, VOCAB, _exact_distribution, _sample, e2e_models  # noqa: F401

SAMPLING = SamplingConfig(temperature=1.0)


class GreedyAfter:
    """Anything is legal; the token after one of ``after`` is the model's best (state: last token)."""

    def __init__(self, after: set[int], vocab: int) -> None:
        self.after = after
        self.row = torch.ones(vocab, dtype=torch.bool)

    def initial(self):
        return None

    def step(self, state, token):
        return int(token)

    def allowed(self, state):
        return self.row

    def greedy(self, state):
        return state in self.after


class MedianAfter(GreedyAfter):
    """As GreedyAfter, but the decided rows take the median of the ordinal ids 0..VOCAB-1."""

    median = FieldMedian((2,), 0)

    def pick(self, state):
        return self.median if state in self.after else None


GREEDY_AFTER_EVEN = GreedyAfter({0, 2}, VOCAB)
MEDIAN_AFTER_EVEN = MedianAfter({0, 2}, VOCAB)


def test_apply_mask_keeps_only_the_best_legal_id_in_greedy_rows():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.5], [0.1, 0.2, 0.3, 0.4]])
    allowed = torch.tensor([[False, True, True, True], [True, True, True, True]])
    out = apply_mask(logits, allowed, (argmax_pick, None))
    assert out[0].tolist() == [float("-inf"), float("-inf"), 2.0, float("-inf")]  # best *legal* id
    assert out[1].tolist() == logits[1].tolist()
    one = constrain(logits[1], GREEDY_AFTER_EVEN, 2)
    assert torch.isfinite(one).tolist() == [False, False, False, True]
    assert torch.equal(constrain(logits[1], GREEDY_AFTER_EVEN, 1), logits[1])
    rows = masks_along(GREEDY_AFTER_EVEN, 3, [0, 1, 2])
    assert rows.picks == (None, argmax_pick, None, argmax_pick)
    assert masks_along(GreedyAfter(set(), VOCAB), 3, [0, 1]).picks is None
    # a pick rule overrides greedy; p = (.3, .1, .2, .4): median 2, argmax 3
    p = torch.tensor([0.3, 0.1, 0.2, 0.4]).log()
    assert torch.isfinite(constrain(p, MEDIAN_AFTER_EVEN, 0)).tolist() == [False, False, True, False]
    assert masks_along(MEDIAN_AFTER_EVEN, 1, [0]).picks == (None, MedianAfter.median)


@pytest.mark.parametrize("grammar", [GREEDY_AFTER_EVEN, MEDIAN_AFTER_EVEN], ids=["greedy", "median"])
@pytest.mark.parametrize("mode", ["plain", "sequential", "pipelined"])
def test_sampling_with_decided_rows_reproduces_the_target_decoded_that_way(e2e_models, mode, grammar):  # noqa: F811
    target, draft = e2e_models
    exact = _exact_distribution(target, SAMPLING, constraint=grammar)
    # the greedy rows change the distribution (else the test could not tell)
    free = _exact_distribution(target, SAMPLING)
    assert 0.5 * sum(abs(free.get(s, 0.0) - exact.get(s, 0.0)) for s in free.keys() | exact.keys()) > 0.05
    dec = SpeculativeDecoder(target, None if mode == "plain" else draft, check=False)
    cfg = SpecConfig(rule="sampling", sampling=SAMPLING, gamma=1 if mode == "pipelined" else 2, draft_length="fixed",
                     pipelined=mode == "pipelined", speculate_threshold=0.0, max_new_tokens=N_TOKENS)
    n = 2000
    counts = _sample(dec, cfg, n, constraint=grammar)
    stat, dof = chi_square(counts, exact, n)
    assert stat < chi_square_critical(dof), (stat, dof, total_variation(counts, exact, n))
    dec.close()


def test_batched_sampling_with_greedy_rows_equals_the_single_session_decoder(pair64):  # noqa: F811
    target, draft = pair64
    grammar = GreedyAfter(set(range(0, 128, 2)), 128)
    single = SpeculativeDecoder(target, draft)
    cfgs = [SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=1.0), seed=s, max_new_tokens=30,
                       stop_ids=[-1]) for s in (1, 2)]
    dec = BatchedDecoder(target, draft, autostart=False)
    outs, _ = run_manual(dec, [(i, [1, 2], c, grammar) for i, c in enumerate(cfgs)])
    greedy_ref = collect(single, [1, 2], cfgs[0].with_(rule="greedy", sampling=SamplingConfig(temperature=0.0)))[0]
    for c, out in zip(cfgs, outs):
        assert out == collect(single, [1, 2], c, constraint=grammar)[0]
    for c, out in zip(cfgs, outs):  # every token after an even one is the target's argmax
        with torch.no_grad():
            logits = target(torch.tensor([[1, 2] + out[:-1]])).logits[0, 1:]
        for i, t in enumerate(out):
            prev = ([2] + out)[i]
            if prev % 2 == 0:
                assert t == int(logits[i].argmax()), (i, t)
    assert outs[0] != greedy_ref or outs[1] != greedy_ref  # the other rows were sampled
    single.close()
