"""The async API: streaming, cancellation within one verify step, backpressure."""
import asyncio
import threading
import time

import pytest

from voicestream import SpecConfig, SpeculativeEngine
from voicestream.spec.decoder import SpeculativeDecoder

from conftest import collect


@pytest.fixture
def engine(tiny_target, tiny_draft):
    eng = SpeculativeEngine(SpeculativeDecoder(tiny_target, tiny_draft), max_buffered_chunks=2)
    yield eng
    eng.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
async def test_async_stream_yields_the_sync_tokens(engine, pipelined):
    cfg = SpecConfig(max_new_tokens=40, pipelined=pipelined)
    expected, _ = collect(engine.decoder, [5, 6, 7], cfg)
    got, chunks = [], 0
    async with engine.stream([5, 6, 7], cfg) as stream:
        async for chunk in stream:
            got.extend(chunk.tokens)
            chunks += 1
    assert got == expected and chunks > 1
    assert stream.stats.finish_reason == "length" and stream.stats.new_tokens == 40


async def test_event_loop_keeps_running_during_generation(engine):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    t = asyncio.create_task(ticker())
    await engine.generate([5, 6, 7], SpecConfig(max_new_tokens=200))
    t.cancel()
    assert ticks > 5


async def test_cancelling_the_consumer_stops_generation(tiny_target, tiny_draft):
    engine = SpeculativeEngine(SpeculativeDecoder(tiny_target, tiny_draft))
    first = asyncio.Event()
    stream_box = {}

    async def consume():
        stream = engine.stream([5, 6, 7], SpecConfig(max_new_tokens=100_000, stop_ids=[10_000]))
        stream_box["s"] = stream
        async for _ in stream:
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stream = stream_box["s"]
    await stream.wait_closed(timeout=5)
    stats = stream.stats
    assert stats.finish_reason == "cancelled"
    forwards = stats.target_forwards
    await asyncio.sleep(0.2)
    assert stream.stats.target_forwards == forwards  # nothing runs after the stop
    assert stats.new_tokens < 100_000
    engine.close()


async def test_cancel_is_prompt_and_frees_caches(tiny_target, tiny_draft):
    """cancel() lands within one verify step: at most one more target forward."""
    decoder = SpeculativeDecoder(tiny_target, tiny_draft)
    cancel = threading.Event()
    gen = decoder.generate([5, 6, 7], SpecConfig(max_new_tokens=10_000, stop_ids=[10_000]), cancel=cancel)
    next(gen)
    cancel.set()
    rest = list(gen)
    assert len(rest) == 1 and rest[0].finish_reason == "cancelled" and rest[0].tokens == []
    decoder.close()


async def test_backpressure_pauses_a_slow_reader(engine):
    cfg = SpecConfig(max_new_tokens=100_000, stop_ids=[10_000], gamma=2, gamma_max=2)
    async with engine.stream([5, 6, 7], cfg) as stream:
        await stream.__anext__()
        await asyncio.sleep(0.5)  # stop reading
        produced = stream.stats.new_tokens
        await asyncio.sleep(0.5)
        assert stream.stats.new_tokens == produced  # paused, not growing
        assert produced <= 4 * 3  # first chunk + 2 buffered + one in hand, at most 3 tokens each
        await stream.__anext__()  # reading again resumes it
        await asyncio.sleep(0.3)
        assert stream.stats.new_tokens > produced
    assert stream.done


async def test_errors_in_the_worker_reach_the_consumer(engine):
    with pytest.raises(ValueError, match="out of range"):
        async for _ in engine.stream([1, 10_000]):
            pass
