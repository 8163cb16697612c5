"""The CUDA paths: the exactness anchors of the CPU suite, with the models on a GPU.

Skipped where torch sees no GPU (CI never has one); on a lent GPU run
``pytest tests/test_cuda.py``. Models run in float64 where outputs must match token for
token: a multi-row verify or a batched forward picks other kernels than a one-row step,
and in float32 that can move a logit by an ulp and flip a near-tie (see
test_batch_decoding.py); in float64 a difference is a real bug in streams, caches or
device placement.
"""
import pytest
import torch

from voicestream.batch import BatchConfig, BatchedDecoder
from voicestream.config import SamplingConfig, SpecConfig
from voicestream.models import refined_pair
from voicestream.spec import GenerationStats, SpeculativeDecoder
from voicestream.spec.lanes import Lane

from conftest import collect

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
PROMPTS = [[5, 6, 7, 8, 9], [100, 43, 17], [1] * 12]


@pytest.fixture(scope="module")
def pair():
    t, d = refined_pair(draft_layers=1, refine_scale=0.1, vocab_size=128, hidden_size=64, num_layers=4,
                        num_heads=4, num_kv_heads=2, seed=1)
    return t.double().to(CUDA).eval(), d.double().to(CUDA).eval()


def greedy_reference(model, prompt, n):
    with torch.no_grad():
        ids = torch.tensor([prompt], device=CUDA)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_lanes_hand_a_tensor_across_streams_in_order():
    """The producer's stream computes; the consumer's waits on its event. Without the wait
    the consumer could read the product before it exists."""
    producer, consumer = Lane("target", CUDA, thread=False), Lane("draft", CUDA, thread=True)
    assert producer.stream is not None and consumer.stream is not None and producer.stream != consumer.stream
    x = torch.randn(4096, 4096, device=CUDA)
    torch.cuda.synchronize()
    with producer.active():
        y = x @ x  # milliseconds of work queued on the producer's stream
        y = y @ x
    event = producer.mark()

    def consume():
        consumer.wait(event, y)
        return y.double().sum().item()

    got = consumer.submit(consume).result(timeout=120)
    consumer.close()
    torch.cuda.synchronize()
    assert got == pytest.approx(((x @ x) @ x).double().sum().item(), rel=1e-5)


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_greedy_speculative_equals_greedy_generate(pair, pipelined):
    target, draft = pair
    dec = SpeculativeDecoder(target, draft)
    assert dec.device.type == "cuda"
    cfg = SpecConfig(gamma=4, draft_length="fixed", pipelined=pipelined, max_new_tokens=48, speculate_threshold=0.0)
    for prompt in PROMPTS:
        stats = GenerationStats()
        ours, _ = collect(dec, prompt, cfg, stats=stats)
        assert ours == greedy_reference(target, prompt, 48), f"prompt {prompt}"
        assert stats.mean_accepted_per_target_forward > 1.2  # the draft's tokens were accepted
    dec.close()


@pytest.mark.parametrize("rule", ["sampling", "ssd"])
def test_seeded_sampling_is_reproducible(pair, rule):
    """Same seed, same tokens (the sampler's randomness lives on the models' device)."""
    target, draft = pair
    dec = SpeculativeDecoder(target, draft)
    cfg = SpecConfig(rule=rule, sampling=SamplingConfig(temperature=1.0), gamma=4, max_new_tokens=40,
                     speculate_threshold=0.0, seed=7)
    a, _ = collect(dec, PROMPTS[0], cfg)
    b, _ = collect(dec, PROMPTS[0], cfg)
    c, _ = collect(dec, PROMPTS[0], cfg.with_(seed=8))
    dec.close()
    assert a == b and len(a) == 40 and all(0 <= t < 128 for t in a)
    assert a != c


def test_batched_sessions_equal_each_alone(pair):
    target, draft = pair
    dec = BatchedDecoder(target, draft, config=BatchConfig(max_batch=4, priority=False, tick_token_budget=0))
    try:
        cfgs = [SpecConfig(gamma=g, max_new_tokens=n, stop_ids=[-1]) for g, n in ((3, 40), (6, 24), (2, 33))]
        reqs = [dec.submit(p, c) for p, c in zip(PROMPTS, cfgs)]
        for prompt, cfg, req in zip(PROMPTS, cfgs, reqs):
            toks = []
            while True:
                item = req.out.get(timeout=120)
                if isinstance(item, BaseException):
                    raise item
                toks += item.tokens
                if item.finish_reason is not None:
                    break
            assert toks == greedy_reference(target, prompt, cfg.max_new_tokens), f"prompt {prompt}"
    finally:
        dec.close()


def test_builtin_voice_on_cuda_speculation_is_exact():
    """The shipped voice (target, feature draft, grammar, lexicon) on the GPU: speculative
    greedy speech equals plain greedy speech, and it is a sentence of sound."""
    import numpy as np

    from voicestream.models import load_causal_lm, resolve_draft
    from voicestream.voice.lexicon import resolve_plan
    from voicestream.say import DEFAULT_VOICE_DIR
    from voicestream.voice.synthesize import Voice

    target = load_causal_lm(DEFAULT_VOICE_DIR / "target", dtype=torch.float64).to(CUDA)
    draft = resolve_draft(target, DEFAULT_VOICE_DIR / "draft")
    assert next(draft.parameters()).device.type == "cuda"
    lexicon, durations = resolve_plan("auto", DEFAULT_VOICE_DIR / "target")
    plain = Voice(target, None, lexicon=lexicon, lexicon_durations=durations)
    spec = Voice(target, draft, lexicon=lexicon, lexicon_durations=durations)
    text = "Your table for four is ready."
    prompt = spec.vocab.prompt_for(text)
    cfg = spec.spec_config.with_(max_new_tokens=spec.max_new_tokens_for(text), draft_length="fixed", gamma=4)
    runs = []
    for v in (plain, spec):
        st = GenerationStats()
        toks = [t for c in v.decoder.generate(prompt, cfg, stats=st, constraint=v.grammar) for t in c.tokens]
        runs.append((toks, st))
    (ref, st_plain), (out, st_spec) = runs
    assert out == ref and st_plain.finish_reason == st_spec.finish_reason == "stop"
    assert st_spec.target_forwards < st_plain.target_forwards
    res = spec.synthesize(text)
    assert 0.8 < res.audio.size / res.sample_rate < 6.0 and np.abs(res.audio).max() > 0.05
