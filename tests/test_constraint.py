"""Token constraints mask draft and target alike; greedy output equals transformers'
own constrained decoding (``prefix_allowed_tokens_fn``)."""
import pytest
import torch

from voicestream.config import SamplingConfig, SpecConfig
from voicestream.spec import SpeculativeDecoder

from conftest import collect

V = 128


class SlotGrammar:
    """A codec-like layout: 3 slots per frame, slot i may use ids [32 + 32 i, 64 + 32 i);
    the prompt is free text (ids < 32) until the marker id 1."""

    def __init__(self) -> None:
        self.masks = []
        for lo in (32, 64, 96):
            m = torch.zeros(V, dtype=torch.bool)
            m[lo : lo + 32] = True
            self.masks.append(m)
        self.free = torch.ones(V, dtype=torch.bool)

    def initial(self):
        return -1  # before the marker

    def step(self, state, token):
        if state == -1:
            return 0 if token == 1 else -1
        return (state + 1) % 3

    def allowed(self, state):
        return self.free if state == -1 else self.masks[state]

    def allowed_ids(self, seq):
        state = self.initial()
        for t in seq:
            state = self.step(state, int(t))
        return self.allowed(state).nonzero().flatten().tolist()


PROMPT = [5, 9, 1]  # text, then the marker


def _hf_constrained(model, grammar, n):
    with torch.no_grad():
        out = model.generate(
            torch.tensor([PROMPT]),
            attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
            prefix_allowed_tokens_fn=lambda b, ids: grammar.allowed_ids(ids.tolist()),
        )
    return out[0, len(PROMPT) :].tolist()


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_constrained_greedy_matches_transformers(tiny_target, tiny_draft, pipelined):
    grammar = SlotGrammar()
    ref = _hf_constrained(tiny_target, grammar, 30)
    assert ref != collect(SpeculativeDecoder(tiny_target), PROMPT, SpecConfig(max_new_tokens=30))[0]
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    cfg = SpecConfig(max_new_tokens=30, pipelined=pipelined, speculate_threshold=0.0)
    ours, _ = collect(dec, PROMPT, cfg, constraint=grammar)
    assert ours == ref
    dec.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_constrained_sampling_obeys_the_grammar(tiny_target, tiny_draft, pipelined):
    grammar = SlotGrammar()
    dec = SpeculativeDecoder(tiny_target, tiny_draft)
    cfg = SpecConfig(
        rule="sampling", sampling=SamplingConfig(temperature=1.0), max_new_tokens=60, pipelined=pipelined,
        speculate_threshold=0.0,
    )
    for seed in range(5):
        out, _ = collect(dec, PROMPT, cfg.with_(seed=seed), constraint=grammar)
        for i, t in enumerate(out):
            lo = 32 + 32 * (i % 3)
            assert lo <= t < lo + 32, (i, t)
    dec.close()
