"""voicestream.client against a real server on 127.0.0.1 with the formant test voice."""
import asyncio
import socket

import numpy as np
import pytest
from server_util import running_server

from voicestream.client import (
    AudioChunk,
    AuthenticationError,
    ConnectionLostError,
    ServerError,
    VoiceStreamClient,
)
from voicestream.server import ServerConfig, VoiceServer
from voicestream.server.app import run_server

pytestmark = pytest.mark.usefixtures("one_torch_thread")


async def test_synthesize_returns_pcm_and_stats(formant_voice):
    async with running_server([formant_voice]) as (_, url):
        client = VoiceStreamClient(url, sample_rate=24000)
        pcm, stats = await client.synthesize("Hello there. A second sentence.")
    assert pcm.dtype == np.int16
    assert abs(pcm.size / 24000 * 1000 - stats["audio_ms"]) < 120
    assert np.sqrt(np.mean((pcm / 32768.0) ** 2)) > 0.03
    assert stats["segments"] == 2 and stats["accepted_per_target_forward"] > 1.0


async def test_mulaw_session_is_decoded_to_s16(formant_voice):
    async with running_server([formant_voice]) as (_, url):
        pcm, stats = await VoiceStreamClient(url, encoding="mulaw", sample_rate=8000).synthesize("Hello there.")
    assert abs(pcm.size / 8000 * 1000 - stats["audio_ms"]) < 120
    assert np.abs(pcm).max() > 1000


async def test_incremental_text_two_utterances(formant_voice):
    async with running_server([formant_voice]) as (_, url):
        async with VoiceStreamClient(url).session() as s:
            assert s.started["sample_rate"] == 16000
            items = []
            for utt_text in ("one two three.", "four five six."):
                for word in utt_text.split(" "):
                    await s.send_text(word + " ")
                await s.flush()
                items += [i async for i in s.events(until=("flushed",))]
            await s.close()
            rest = [i async for i in s.events()]
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    events = [i["type"] for i in items if isinstance(i, dict)]
    assert events == ["audio_start", "done", "flushed"] * 2
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert {c.utterance for c in chunks} == {1, 2}
    assert all(isinstance(c.samples, np.ndarray) and c.samples.dtype == np.int16 for c in chunks)
    assert not any(isinstance(i, AudioChunk) for i in rest)


async def test_cancel_stops_audio_and_session_stays_usable(paced_voice):
    async with running_server([paced_voice]) as (_, url):
        async with VoiceStreamClient(url).session() as s:
            await s.send_text("This is a long sentence that keeps going for quite a while, on and on. " * 3)
            await s.flush()
            got_audio = False
            async for item in s.events(until=("interrupted",)):
                if isinstance(item, AudioChunk) and not got_audio:
                    got_audio = True
                    await s.cancel()
                assert not (isinstance(item, dict) and item["type"] == "done"), "cancelled utterance completed"
            assert got_audio and item["reason"] == "cancel"
            await s.send_text("Short one.")
            await s.flush()
            after = [i async for i in s.events(until=("flushed",))]
    assert [i["type"] for i in after if isinstance(i, dict)] == ["audio_start", "done", "flushed"]
    assert {i.utterance for i in after if isinstance(i, AudioChunk)} == {2}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_reconnects_until_server_is_listening(formant_voice):
    port = _free_port()
    server = VoiceServer(ServerConfig(port=port, heartbeat_s=None, shutdown_deadline_s=5.0), [formant_voice])
    ready, stop = asyncio.Event(), asyncio.Event()

    async def start_late():
        await asyncio.sleep(0.4)  # the first connect attempts hit a closed port
        await run_server(server, ready=ready, stop=stop)

    task = asyncio.create_task(start_late())
    try:
        client = VoiceStreamClient(f"http://127.0.0.1:{port}", reconnect_attempts=8, backoff_s=0.1)
        t0 = asyncio.get_running_loop().time()
        pcm, stats = await client.synthesize("Hello.")
        assert asyncio.get_running_loop().time() - t0 >= 0.35
        assert pcm.size > 0 and stats["audio_ms"] > 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_gives_up_with_clear_error_when_nobody_listens():
    client = VoiceStreamClient(f"http://127.0.0.1:{_free_port()}", reconnect_attempts=2, backoff_s=0.01)
    with pytest.raises(ConnectionLostError, match="after 3 attempts"):
        await client.synthesize("Hello.")


async def test_auth_error_is_clear_and_not_retried(formant_voice):
    async with running_server([formant_voice], api_key="s3cret") as (server, url):
        client = VoiceStreamClient(url, reconnect_attempts=5, backoff_s=1.0)
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(AuthenticationError) as info:
            await client.synthesize("Hello.")
        assert info.value.status == 401
        assert asyncio.get_running_loop().time() - t0 < 0.9  # no backoff sleeps
        with pytest.raises(AuthenticationError):
            await VoiceStreamClient(url, api_key="wrong").synthesize("Hello.")
        pcm, _ = await VoiceStreamClient(url, api_key="s3cret").synthesize("Hello.")
        assert pcm.size > 0


async def test_start_error_surfaces_as_server_error(formant_voice):
    async with running_server([formant_voice]) as (_, url):
        with pytest.raises(ServerError) as info:
            await VoiceStreamClient(url, voice="nope").synthesize("Hello.")
    assert info.value.code == "unknown_voice"


async def test_mid_utterance_drop_raises_connection_lost(paced_voice):
    server = VoiceServer(ServerConfig(port=0, heartbeat_s=None, shutdown_deadline_s=0.0), [paced_voice])
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_server(server, ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 10)
    host, port = server.bound[0][:2]
    try:
        async with VoiceStreamClient(f"http://{host}:{port}").session() as s:
            await s.send_text("A long sentence that is still being spoken when the server goes away. " * 3)
            await s.flush()
            with pytest.raises(ConnectionLostError) as info:
                async for item in s.events():
                    if isinstance(item, AudioChunk):
                        stop.set()  # the server shuts down with no grace period mid-utterance
            assert info.value.close_code == 1001
            assert "close code 1001" in str(info.value)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
