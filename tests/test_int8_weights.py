"""int8 weights in the lean forward: close to float32, chosen per model, used by every runner."""
import copy

import pytest
import torch
import torch.nn.functional as F

from voicestream.config import SpecConfig
from voicestream.models import random_llama
from voicestream.spec import SpeculativeDecoder
from voicestream.spec.lean_runner import LeanLlamaRunner, LeanModel, set_lean_weights
from voicestream.spec.quant import Int8Linear, int8_available, resolve_weights

from conftest import collect

needs_int8 = pytest.mark.skipif(not int8_available(), reason="no x86/fbgemm int8 engine on this CPU")


@needs_int8
@pytest.mark.parametrize("rows", [1, 5])
def test_int8_linear_is_close_to_float32(rows):
    torch.manual_seed(0)
    w, b = torch.randn(300, 128) * 0.05, torch.randn(300) * 0.1
    x = torch.randn(2, rows, 128)
    ref = F.linear(x, w, b)
    got = Int8Linear(w, b)(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.03, float(rel)
    # and it is a quantisation, not the float path under another name
    assert not torch.equal(got, ref)


def test_weight_format_choice():
    assert resolve_weights("fp32") == "fp32"
    assert resolve_weights("auto") == ("int8" if int8_available() else "fp32")
    assert resolve_weights(None) == resolve_weights("auto")
    with pytest.raises(ValueError, match="weights must be one of"):
        resolve_weights("int4")
    with pytest.raises(ValueError, match="int8 weights need a CPU"):
        resolve_weights("int8", "meta")


def _model():
    return random_llama(vocab_size=128, hidden_size=96, num_layers=3, num_heads=4, num_kv_heads=2,
                        intermediate_size=256, seed=7).eval()


@needs_int8
def test_int8_lean_forward_tracks_float32_and_switches_back():
    model = _model()
    seq = list(range(3, 60))
    with torch.inference_mode():
        ref = LeanLlamaRunner(model).extend(seq)
        assert set_lean_weights(model, "int8") == "int8"
        q = LeanLlamaRunner(model).extend(seq)
        assert LeanModel.of(model).weights == "int8"
        set_lean_weights(model, "fp32")  # the cached int8 build is dropped, not reused
        back = LeanLlamaRunner(model).extend(seq)
    torch.testing.assert_close(back, ref)
    assert not torch.equal(q, ref)
    assert (q - ref).abs().max() < 0.1 * ref.abs().max()
    agree = (q.argmax(-1) == ref.argmax(-1)).float().mean()
    assert agree >= 0.9, float(agree)


@needs_int8
def test_int8_on_a_bf16_loaded_model_runs_in_float32():
    """A model loaded in bf16 (the shipped voice's dtype) still decodes under int8: the
    float32 down_proj and the residual stream are float32, whatever the load dtype."""
    model = _model()
    seq = list(range(3, 40))
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    set_lean_weights(bf16, "int8")
    with torch.inference_mode():
        ref = LeanLlamaRunner(model).extend(seq)
        got = LeanLlamaRunner(bf16).extend(seq)
    assert got.dtype == torch.float32
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.85


@needs_int8
def test_int8_target_and_draft_decode_speculatively(tiny_target, tiny_draft):
    target, draft = copy.deepcopy(tiny_target), copy.deepcopy(tiny_draft)
    set_lean_weights(target, "int8")
    set_lean_weights(draft, "int8")
    prompt = [5, 6, 7, 8]
    cfg = SpecConfig(max_new_tokens=32)
    plain = SpeculativeDecoder(target, None, lean_target=True)
    spec = SpeculativeDecoder(target, draft, lean_target=True)
    try:
        a, _ = collect(plain, prompt, cfg)
        b, _ = collect(spec, prompt, cfg)
        assert len(a) == len(b) == 32
        # the first token comes from the prefill, computed the same way in both
        assert a[0] == b[0]
        assert spec_stats_ok(spec, prompt, cfg)
    finally:
        plain.close()
        spec.close()


def spec_stats_ok(dec, prompt, cfg) -> bool:
    from voicestream.spec.stats import GenerationStats

    st = GenerationStats()
    collect(dec, prompt, cfg, stats=st)
    return st.target_forwards > 0 and st.draft_forwards > 0 and st.mean_accepted_per_target_forward >= 1.0


@needs_int8
def test_batched_decoding_uses_the_int8_weights(tiny_target):
    """The batched slot model builds its forward from the same per-model choice."""
    from voicestream.batch.slots import SlotModel

    target = copy.deepcopy(tiny_target)
    set_lean_weights(target, "int8")
    slots = SlotModel(target, slots=2, capacity=64)
    assert slots.lean.weights == "int8"
    assert slots.lean.dtype == torch.float32
