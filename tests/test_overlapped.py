"""Overlapped decoding: a feature draft drafting ahead on its own lane while the target verifies.

The draft never waits for a verification and the target never waits for the draft, so which
tokens get verified in which forward depends on timing; what is emitted must not. Greedy
output is the target's own, sampling keeps the target's distribution (in
``test_feature_draft.py``), and a generation cut short stops its draft job.
"""
import threading
import time

import torch

from voicestream.config import SpecConfig
from voicestream.spec import GenerationStats, SpeculativeDecoder
from voicestream.spec.ahead import Ahead

from conftest import collect, hf_greedy
from test_feature_draft import _pair


def test_ahead_hands_over_only_what_follows_the_committed_tokens():
    a = Ahead([1, 2], horizon=6)
    a.append([3, 4], [None, None], [True, False], [0.9, 1.0])
    a.append([5], [None], [True], [0.1])
    assert a.after([1, 2], 8)[0] == [3, 4, 5]
    assert a.after([1, 2, 3], 1)[0] == [4]
    assert a.after([1, 2], 8, threshold=0.5)[0] == [3, 4, 5]  # 5 is under it, but the cut comes after it
    assert a.after([1, 2, 3, 4, 5], 8)[0] == []  # nothing drafted beyond yet
    assert a.after([1, 2, 9], 8)[0] == [] and not a.follows([1, 2, 9])  # the draft went off the path
    assert a.follows([1, 2, 3, 4, 5, 6])  # one token behind a running job: it may catch up
    assert not a.follows([1, 2, 3, 4, 5, 6, 7])
    a.finish()
    assert not a.follows([1, 2, 3, 4, 5, 6])  # a finished job does not
    b = Ahead([1, 2], horizon=4)  # low-confidence cut keeps the forced run after the cut token
    b.append([3, 4, 5], [None] * 3, [True, False, True], [0.1, 1.0, 0.9])
    assert b.after([1, 2], 8, threshold=0.5)[0] == [3, 4]


def test_the_draft_waits_at_the_horizon_until_it_moves_or_is_aborted():
    a = Ahead([1], horizon=3)
    got = []
    job = threading.Thread(target=lambda: got.extend([a.room(2), a.room(3), a.room(4)]))
    job.start()
    job.join(0.2)
    assert job.is_alive() and got == []  # length 2 < 3 passes; 3 blocks
    a.move_horizon(4)
    job.join(0.2)
    assert job.is_alive()  # 4 blocks at horizon 4
    a.abort()
    job.join(2)
    assert not job.is_alive() and got == [True, True, False]


def test_overlapped_greedy_output_is_the_targets_and_uses_the_draft(monkeypatch):
    from voicestream.spec.lean_runner import LeanLlamaRunner

    forward = LeanLlamaRunner._forward

    def slow_target(self, *args, **kwargs):  # a target worth drafting for: the draft gets ahead
        time.sleep(0.003)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LeanLlamaRunner, "_forward", slow_target)
    target, draft = _pair(layers=1)
    dec = SpeculativeDecoder(target, draft, draft_cpu_threads=1)
    prompt = [5, 6, 7, 8]
    expected = hf_greedy(target, prompt, 64)
    st = GenerationStats()
    try:
        for _ in range(3):
            got, _ = collect(dec, prompt, SpecConfig(max_new_tokens=64, pipelined=True), stats=st)
            assert got == expected
    finally:
        dec.close()
    assert st.draft_forwards > 0 and st.drafted_tokens > 0


def test_a_generation_cut_short_stops_its_draft_and_the_decoder_goes_on():
    target, draft = _pair(layers=1, dtype=torch.float32)
    dec = SpeculativeDecoder(target, draft)
    cfg = SpecConfig(max_new_tokens=200, pipelined=True)
    try:
        gen = dec.generate([5, 6, 7], cfg)
        next(gen)
        gen.close()  # the consumer walks away after the first chunk
        done = threading.Event()
        dec.draft_lane.submit(done.set)  # the lane is free again: the draft job has returned
        assert done.wait(5)
        got, _ = collect(dec, [5, 6, 7], cfg.with_(max_new_tokens=20))
        plain, _ = collect(dec, [5, 6, 7], cfg.with_(max_new_tokens=20, pipelined=False))
        assert got == plain
    finally:
        dec.close()
