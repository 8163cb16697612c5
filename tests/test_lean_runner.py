"""The lean draft runner computes what transformers computes, on the same weights."""
import copy

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from voicestream.config import SpecConfig
from voicestream.models import random_llama
from voicestream.spec import SpeculativeDecoder
from voicestream.spec.lean_runner import LeanLlamaRunner, lean_supported, make_runner
from voicestream.spec.runner import ModelRunner

from conftest import collect, hf_greedy


def _qwen2():
    torch.manual_seed(5)
    cfg = Qwen2Config(
        vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=512,
    )
    return Qwen2ForCausalLM(cfg).eval()


MODELS = {
    "llama-mha": lambda: random_llama(vocab_size=96, hidden_size=64, num_layers=3, num_heads=4, seed=2),
    "llama-gqa": lambda: random_llama(vocab_size=96, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, seed=3),
    "qwen2-bias-gqa": _qwen2,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_lean_logits_match_transformers_through_extend_and_rollback(name):
    model = MODELS[name]()
    assert lean_supported(model)
    ref, lean = ModelRunner(model), LeanLlamaRunner(model, initial_capacity=4)  # forces cache and rope growth
    script = [("extend", [1, 2, 3, 4, 5]), ("extend", [6]), ("extend", [7, 8, 9]), ("rollback", 4),
              ("extend", [10, 11]), ("extend", [12]), ("rollback", 0), ("extend", list(range(20, 40)))]
    with torch.inference_mode():
        for op, arg in script:
            if op == "rollback":
                ref.rollback(arg)
                lean.rollback(arg)
                continue
            torch.testing.assert_close(lean.extend(arg), ref.extend(arg), atol=1e-4, rtol=1e-4)
    assert lean.tokens == ref.tokens


def test_trained_weights_are_picked_up():
    model = MODELS["llama-mha"]()
    with torch.inference_mode():
        before = make_runner(model).prefill([1, 2, 3])
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.mul_(3.0)  # as an optimizer step would, in place
    with torch.inference_mode():
        after = make_runner(model).prefill([1, 2, 3])
        expected = ModelRunner(model).prefill([1, 2, 3])
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, atol=1e-4, rtol=1e-4)


def test_lean_and_plain_drafts_give_the_same_speculative_output(tiny_target, tiny_draft):
    prompt = [5, 6, 7, 8]
    for lean in (False, True):
        dec = SpeculativeDecoder(tiny_target, tiny_draft, lean_draft=lean)
        assert collect(dec, prompt, SpecConfig(max_new_tokens=32))[0] == hf_greedy(tiny_target, prompt, 32)
        dec.close()


def test_a_lean_target_decodes_like_the_transformers_forward(tiny_target, tiny_draft):
    """lean_target: plain and speculative decoding through the lean target forward give the
    target's greedy tokens (float64: no rounding near-ties)."""
    target, draft = copy.deepcopy(tiny_target).double(), copy.deepcopy(tiny_draft).double()
    prompt = [5, 6, 7, 8]
    expected = hf_greedy(target, prompt, 40)
    for d in (None, draft):
        dec = SpeculativeDecoder(target, d, lean_target=True)
        assert collect(dec, prompt, SpecConfig(max_new_tokens=40))[0] == expected
        dec.close()


def test_wrappers_keep_their_own_forward():
    class MaskingWrapper(torch.nn.Module):  # looks like an HF model, but changes forward()
        def __init__(self, inner):
            super().__init__()
            self.model, self.config = inner, inner.config

        def forward(self, **kw):
            return self.model(**kw)

    model = MODELS["llama-mha"]()
    assert lean_supported(model)
    assert not lean_supported(MaskingWrapper(model))
    assert type(make_runner(MaskingWrapper(model))) is ModelRunner


@pytest.mark.parametrize("weights", ["fp32", "int8"])
@pytest.mark.parametrize("name", list(MODELS))
def test_the_scripted_stack_computes_what_the_eager_layers_compute(name, weights):
    """One sequence's forward runs as TorchScript (one GIL-free call); it must be the eager
    layers' arithmetic exactly -- plain and speculative decoding, cache and all."""
    from voicestream.spec.lean_runner import LeanModel, SequenceKV, run_layers, set_lean_weights
    from voicestream.spec.quant import int8_available

    if weights == "int8" and not int8_available():
        pytest.skip("no int8 backend on this CPU")
    model = MODELS[name]()
    set_lean_weights(model, weights)
    lean = LeanModel.of(model)
    assert lean.stack is not None, "TorchScript failed to compile the lean stack"
    torch.manual_seed(0)
    geo, n = lean.geo, 12
    shape = (len(lean.layers), 1, geo.kv_heads, 16, geo.head_dim)
    caches = {"eager": (torch.zeros(shape), torch.zeros(shape)), "scripted": (torch.zeros(shape), torch.zeros(shape))}
    x = torch.randn(1, n + 1, model.config.hidden_size)
    cos, sin = lean.rope(torch.arange(n + 1)[None])
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    out = {}
    with torch.inference_mode():
        for kind, stack in (("eager", None), ("scripted", lean.stack)):
            k, v = caches[kind]
            prefix = run_layers(lean.layers, stack, x[:, :n], cos[:, :n], sin[:, :n], mask, SequenceKV(k, v, 0, n))
            step = run_layers(lean.layers, stack, x[:, n:], cos[:, n:], sin[:, n:], None, SequenceKV(k, v, n, n + 1))
            out[kind] = (prefix, step)
    for a, b in zip(out["eager"], out["scripted"]):
        assert torch.equal(a, b)
    for a, b in zip(caches["eager"], caches["scripted"]):
        assert torch.equal(a, b) and a[:, :, :, : n + 1].abs().sum() > 0


def test_where_torchscript_fails_the_eager_layers_decode_the_same(monkeypatch, tiny_target, tiny_draft):
    from voicestream.spec.lean_runner import LeanModel

    cfg = SpecConfig(max_new_tokens=24)
    dec = SpeculativeDecoder(tiny_target, tiny_draft, lean_target=True)
    scripted, _ = collect(dec, [5, 6, 7], cfg)
    assert LeanModel.of(tiny_target).stack is not None

    def refuse(*args, **kwargs):
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "script", refuse)
    target, draft = copy.deepcopy(tiny_target), copy.deepcopy(tiny_draft)  # fresh models: built anew
    with pytest.warns(RuntimeWarning, match="stays eager"):
        eager_dec = SpeculativeDecoder(target, draft, lean_target=True)
        eager, _ = collect(eager_dec, [5, 6, 7], cfg)
    assert LeanModel.of(target).stack is None
    assert eager == scripted
    dec.close()
    eager_dec.close()
