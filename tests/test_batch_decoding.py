"""Batched speculative decoding across sessions: slot cache, scheduler, correctness.

Exactness tests run the models in float64: a batched forward pads rows to a common
length and multiplies larger matrices, which in float32 can move a logit by an ulp and
flip a near-tie; in float64 that cannot happen at these sizes, so any difference is a
real bug in caches, masks, positions or bookkeeping.
"""
import threading
import time

import pytest
import torch

from voicestream.batch import BatchConfig, BatchedDecoder, SlotModel, UnsupportedModelError
from voicestream.config import SamplingConfig, SpecConfig
from voicestream.models import random_llama, refined_pair
from voicestream.spec import SpeculativeDecoder
from voicestream.spec.lean_runner import LeanLlamaRunner
from voicestream.spec.runner import ModelRunner

from conftest import collect, hf_greedy
from test_constraint import SlotGrammar

V = 128


@pytest.fixture(scope="module")
def pair64():
    t, d = refined_pair(draft_layers=1, refine_scale=0.1, vocab_size=V, hidden_size=64, num_layers=4,
                        num_heads=4, num_kv_heads=2, seed=1)
    return t.double(), d.double()


def drain(req) -> list[int]:
    """Everything a manually stepped request produced so far (tokens, incl. a stop id)."""
    out = []
    while not req.out.empty():
        item = req.out.get()
        if isinstance(item, BaseException):
            raise item
        out.extend(item.tokens)
        if item.stop_token is not None:
            out.append(item.stop_token)
    return out


def run_manual(dec: BatchedDecoder, jobs: list[tuple[int, list[int], SpecConfig, object]], max_ticks=2000):
    """Submit each job at its tick (continuous batching: joins between ticks); step to the end."""
    reqs = {}
    for tick in range(max_ticks):
        for i, (at, prompt, cfg, constraint) in enumerate(jobs):
            if at == tick:
                reqs[i] = dec.submit(prompt, cfg, constraint=constraint)
        busy = dec.step()
        if not busy and len(reqs) == len(jobs):
            break
    else:
        raise AssertionError("did not finish")
    return [drain(reqs[i]) for i in range(len(jobs))], [reqs[i].stats for i in range(len(jobs))]


# --- the slot cache ---------------------------------------------------------------------
def test_slot_model_ragged_forward_equals_single_sequence_forward(pair64):
    target, _ = pair64
    sm = SlotModel(target, slots=1, capacity=4)  # both grow on demand
    seqs = [[3, 1, 4, 1, 5, 9, 2, 6], [7, 7], list(range(10, 40))]
    for _ in seqs:
        sm.add()
    first = sm.forward([0, 1, 2], [s[:3] for s in seqs])
    second = sm.forward([2, 0], [seqs[2][3:], seqs[0][3:]])  # scattered slots, ragged lengths
    ref = [LeanLlamaRunner(target).extend(s).detach() for s in seqs]  # same numerics as the slots
    torch.testing.assert_close(ref[2], ModelRunner(target).extend(seqs[2]), rtol=0, atol=1e-6)  # transformers'
    for i in range(3):
        torch.testing.assert_close(first[i], ref[i][:3], rtol=0, atol=1e-10)
    torch.testing.assert_close(second[0], ref[2][3:], rtol=0, atol=1e-10)
    torch.testing.assert_close(second[1], ref[0][3:], rtol=0, atol=1e-10)
    # roll slot 0 back and feed something else; slot 1 gets nothing this step
    sm.truncate(0, 5)
    last = sm.forward([0, 1], [[8, 8], []], last_only=True)
    assert last[1] is None
    torch.testing.assert_close(last[0], LeanLlamaRunner(target).extend(seqs[0][:5] + [8, 8])[-1], rtol=0, atol=1e-10)
    # freeing slot 0 moves the last slot into it, keys and all
    assert sm.remove(0) == 2 and sm.lengths == [30, 2]
    moved = sm.forward([0], [[5]], last_only=True)[0]
    torch.testing.assert_close(moved, LeanLlamaRunner(target).extend(seqs[2] + [5])[-1], rtol=0, atol=1e-10)
    with pytest.raises(ValueError):
        sm.truncate(1, 3)  # cannot keep more than it holds


def test_unsupported_architecture_is_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=64))
    with pytest.raises(UnsupportedModelError, match="Llama"):
        BatchedDecoder(gpt2)


# --- correctness ------------------------------------------------------------------------
GREEDY = SamplingConfig(temperature=0.0)


def test_batched_greedy_equals_each_session_alone(pair64):
    """Sessions of different lengths and settings, joining at different ticks: each one's
    tokens equal transformers' greedy decoding of its prompt alone."""
    target, draft = pair64
    jobs = [
        (0, [1, 2, 3], SpecConfig(gamma=3, max_new_tokens=48, stop_ids=[-1])),
        (0, [5], SpecConfig(gamma=6, draft_length="fixed", max_new_tokens=20, stop_ids=[-1])),
        (2, list(range(40, 75)), SpecConfig(gamma=2, max_new_tokens=37, stop_ids=[-1])),
        (5, [9, 9, 9, 9], SpecConfig(draft_length="confidence", gamma_max=8, max_new_tokens=30, stop_ids=[-1])),
        (6, [11, 12], SpecConfig(gamma=4, max_new_tokens=25, stop_ids=[-1],
                                 sampling=SamplingConfig(temperature=0.0, repetition_penalty=1.4))),
    ]
    jobs = [(at, p, c, None) for at, p, c in jobs]
    dec = BatchedDecoder(target, draft, config=BatchConfig(max_batch=8, warmup_tokens=6, tick_token_budget=0),
                         autostart=False)
    outs, stats = run_manual(dec, jobs)
    for (_, prompt, cfg, _), out, st in zip(jobs, outs, stats):
        pen = cfg.sampling.repetition_penalty
        ref = hf_greedy(target, prompt, cfg.max_new_tokens, **({"repetition_penalty": pen} if pen != 1 else {}))
        assert out == ref
        assert st.finish_reason == "length" and st.new_tokens == cfg.max_new_tokens
        assert st.mean_accepted_per_target_forward > 1.2  # it really speculated
    assert dec.priority_ticks > 0 and dec.active == [] and dec.target.live == 0

    # a tick token budget shortens drafts as the batch grows, never the output
    capped = BatchedDecoder(target, draft, config=BatchConfig(max_batch=8, warmup_tokens=6, tick_token_budget=8),
                            autostart=False)
    widths = []
    orig = capped.target.forward
    capped.target.forward = lambda slots, feeds, **kw: (widths.append((len(feeds), max(map(len, feeds)))),
                                                       orig(slots, feeds, **kw))[1]
    outs_capped, _ = run_manual(capped, jobs)
    assert outs_capped == outs
    verifies = [w for n, w in widths if n >= 3]  # verify forwards of 3+ sessions (prefills are 1-2 rows here)
    assert verifies and max(verifies) <= max(2, 8 // 3)  # the last token + a draft of at most 8 // rows - 1
    assert BatchedDecoder(target, draft, autostart=False).tick_token_budget == 48  # the CPU default


def test_batched_stops_at_eos_inside_an_accepted_chunk(pair64):
    target, draft = pair64
    free = hf_greedy(target, [4, 2], 30)
    stop = free[17]  # a token the target emits mid-way: make it the stop id
    cut = free.index(stop)
    dec = BatchedDecoder(target, draft, autostart=False)
    outs, stats = run_manual(dec, [(0, [4, 2], SpecConfig(gamma=5, max_new_tokens=30, stop_ids=[stop]), None),
                                   (0, [6], SpecConfig(gamma=5, max_new_tokens=30, stop_ids=[-1]), None)])
    assert outs[0] == free[: cut + 1] and stats[0].finish_reason == "stop"
    assert outs[1] == hf_greedy(target, [6], 30)


def test_batched_sampling_and_topk_equal_the_single_session_decoder(pair64):
    """Per-session rules, temperatures, top-k and seeds: the keyed randomness makes a
    sampled session's tokens identical batched or alone."""
    target, draft = pair64
    single = SpeculativeDecoder(target, draft)
    cfgs = [
        SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=0.9, top_k=30), seed=1, max_new_tokens=40),
        SpecConfig(rule="sampling", sampling=SamplingConfig(temperature=0.6, top_p=0.9), seed=2, max_new_tokens=33),
        SpecConfig(rule="ssd", beta=0.3, sampling=SamplingConfig(temperature=1.0), seed=3, max_new_tokens=29),
        SpecConfig(rule="topk", topk_tolerance=3, sampling=GREEDY, max_new_tokens=35),
    ]
    cfgs = [c.with_(stop_ids=[-1]) for c in cfgs]
    prompts = [[1, 2], [3], [4, 5, 6], [7, 8]]
    dec = BatchedDecoder(target, draft, autostart=False)
    outs, _ = run_manual(dec, [(i, p, c, None) for i, (p, c) in enumerate(zip(prompts, cfgs))])
    for p, c, out in zip(prompts, cfgs, outs):
        assert out == collect(single, p, c)[0]
    assert outs[0] != outs[1]


def test_batched_constrained_and_plain_sessions(pair64):
    """A token grammar per session, and a target with no draft (plain batched decoding)."""
    target, draft = pair64
    grammar = SlotGrammar()
    cfg = SpecConfig(gamma=4, max_new_tokens=30, stop_ids=[-1])
    single = SpeculativeDecoder(target, draft)
    dec = BatchedDecoder(target, draft, autostart=False)
    outs, _ = run_manual(dec, [(0, [5, 9, 1], cfg, grammar), (1, [5, 9, 1], cfg, None)])
    assert outs[0] == collect(single, [5, 9, 1], cfg, constraint=grammar)[0]
    assert all(grammar.masks[i % 3][t] for i, t in enumerate(outs[0]))
    assert outs[1] == hf_greedy(target, [5, 9, 1], 30)
    plain = BatchedDecoder(target, None, autostart=False)
    outs, stats = run_manual(plain, [(0, [3, 4], cfg, None), (3, [8], cfg.with_(max_new_tokens=12), None)])
    assert outs == [hf_greedy(target, [3, 4], 30), hf_greedy(target, [8], 12)]
    assert stats[0].mean_accepted_per_target_forward <= 1.0


# --- scheduling -------------------------------------------------------------------------
def test_newcomer_gets_priority_ticks_for_its_first_tokens(pair64):
    """A session joining a busy batch reaches its first audio after less batch work (rows
    run through the target) with priority ticks, and the others keep progressing."""
    target, draft = pair64
    cfg = SpecConfig(gamma=2, draft_length="fixed", max_new_tokens=400, stop_ids=[-1])

    def work_until_first_audio(priority: bool) -> tuple[int, int, list[int]]:
        dec = BatchedDecoder(target, draft, config=BatchConfig(warmup_tokens=12, priority=priority,
                                                               priority_burst=2), autostart=False)
        old = [dec.submit([i + 1], cfg) for i in range(6)]
        for _ in range(3):
            dec.step()
        before = [len(drain(r)) for r in old]
        new = dec.submit([50, 51], cfg)
        rows0 = dec.rows_run
        for _ in range(100):
            if new.stats.new_tokens >= 12:
                break
            dec.step()
        progressed = [len(drain(r)) for r in old]
        tokens = drain(new)
        dec.close()
        return dec.rows_run - rows0, min(progressed), tokens

    rows_p, old_progress, toks_p = work_until_first_audio(True)
    rows_n, _, toks_n = work_until_first_audio(False)
    assert rows_p < rows_n  # the newcomer did not wait behind full-batch ticks
    assert old_progress > 0  # nobody starved meanwhile
    assert toks_p[:12] == toks_n[:12] == hf_greedy(target, [50, 51], 12)


def test_lead_aware_priority_runs_past_the_burst_only_while_speakers_have_audio_in_hand(pair64):
    """With a real-time rate, a newcomer gets uninterrupted priority ticks while every speaking
    session keeps ``min_lead_s`` of audio ahead of playback; once a speaker falls behind,
    full ticks interleave again after the guaranteed burst."""
    target, draft = pair64
    cfg = SpecConfig(gamma=2, draft_length="fixed", max_new_tokens=400, stop_ids=[-1])

    def full_ticks_until_warm(rate: float) -> int:
        dec = BatchedDecoder(target, draft, config=BatchConfig(warmup_tokens=12, priority_burst=1,
                                                               realtime_tokens_per_s=rate, min_lead_s=0.5),
                             autostart=False)
        old = [dec.submit([i + 1], cfg) for i in range(4)]
        for _ in range(3):
            dec.step()
        assert all(r.stats.first_token_at is not None for r in old)
        new = dec.submit([50, 51], cfg)
        full = 0
        for _ in range(100):
            if new.stats.new_tokens >= 12:
                break
            before = dec.priority_ticks
            dec.step()
            full += dec.priority_ticks == before
        dec.close()
        return full

    # a tiny rate: a few tokens are seconds of audio, so the speakers are far ahead of playback
    assert full_ticks_until_warm(rate=0.01) == 1  # one full tick while the speakers still warm up too
    # a huge rate: the speakers are behind real time, so full ticks keep interleaving
    assert full_ticks_until_warm(rate=1e6) >= 2
    with pytest.raises(ValueError):
        BatchConfig(realtime_tokens_per_s=0)


def test_max_batch_caps_the_batch_and_waiting_sessions_join_later(pair64):
    target, draft = pair64
    dec = BatchedDecoder(target, draft, config=BatchConfig(max_batch=2), autostart=False)
    cfg = SpecConfig(gamma=3, max_new_tokens=15, stop_ids=[-1])
    reqs = [dec.submit([i + 1], cfg) for i in range(5)]
    seen_live = []
    while dec.step():
        seen_live.append(len(dec.active))
    assert max(seen_live) == 2
    for i, r in enumerate(reqs):
        assert drain(r) == hf_greedy(target, [i + 1], 15)


def test_threads_cancel_and_early_close(pair64):
    """Real concurrency: generate() from several threads; one is cancelled mid-way, one
    stops reading early; the rest finish with their exact tokens and every slot is freed."""
    target, draft = pair64
    dec = BatchedDecoder(target, draft, config=BatchConfig(max_batch=8))
    cfg = SpecConfig(gamma=3, max_new_tokens=40, stop_ids=[-1])
    results: dict[int, list[int]] = {}
    cancel = threading.Event()
    reasons = {}

    def worker(i: int) -> None:
        toks = []
        gen = dec.generate([i + 1], cfg, cancel=cancel if i == 0 else None)
        for chunk in gen:
            toks.extend(chunk.tokens)
            if i == 0 and len(toks) >= 5:
                cancel.set()
            if i == 1 and len(toks) >= 5:
                gen.close()  # the consumer walks away
                break
            reasons[i] = chunk.finish_reason
        results[i] = toks

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert reasons[0] == "cancelled" and len(results[0]) < 40
    for i in (2, 3, 4):
        assert results[i] == hf_greedy(target, [i + 1], 40)
    deadline = time.monotonic() + 5
    while dec.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dec.active == [] and dec.target.live == 0 and dec.draft.live == 0
    dec.close()
    with pytest.raises(RuntimeError, match="closed"):
        dec.submit([1], cfg)


class _Exploding(SlotGrammar):
    def allowed(self, state):
        if state == 2:
            raise RuntimeError("grammar bug")
        return super().allowed(state)


def test_one_sessions_failure_does_not_fail_the_batch(pair64):
    target, draft = pair64
    dec = BatchedDecoder(target, draft)
    cfg = SpecConfig(gamma=3, max_new_tokens=20, stop_ids=[-1])
    out = {}

    def run(i, constraint):
        try:
            out[i] = [t for c in dec.generate([5, 9, 1] if constraint else [i], cfg, constraint=constraint)
                      for t in c.tokens]
        except RuntimeError as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(0, _Exploding()))] + [
        threading.Thread(target=run, args=(i, None)) for i in (1, 2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(out[0], RuntimeError) and "grammar bug" in str(out[0])
    assert out[1] == hf_greedy(target, [1], 20) and out[2] == hf_greedy(target, [2], 20)
    dec.close()


def test_prompt_validation(pair64):
    target, draft = pair64
    dec = BatchedDecoder(target, draft, autostart=False)
    with pytest.raises(ValueError, match="at least one token"):
        dec.submit([], SpecConfig())
    with pytest.raises(ValueError, match="out of range"):
        dec.submit([V + 5], SpecConfig())
    with pytest.raises(ValueError):
        BatchConfig(max_batch=0)
