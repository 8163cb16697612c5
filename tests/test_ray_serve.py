"""voicestream on Ray Serve: a local Ray instance, real replicas with the formant test voice,
and real clients talking to them through Serve's HTTP proxy on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import socket
import struct

import aiohttp
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray Serve not installed (pip install 'voicestream[ray]')")
serve = pytest.importorskip("ray.serve")

from server_util import metric, ws_client

from voicestream.client import AudioChunk, AuthenticationError, VoiceStreamClient
from voicestream.scale.ray_serve import (
    REPLICA_HEADER,
    RayServeConfig,
    deploy,
    server_args,
)

pytestmark = pytest.mark.timeout(150)
API_KEY = "s3cret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def serve_urls():
    """Two apps on one local Serve instance: 'open' (2 replicas) and '/secure' (1 replica,
    API key); yields their URLs and the proxy's port."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        port = _free_port()
        common = {"host": "127.0.0.1", "port": port, "num_cpus": 0.25, "graceful_shutdown_timeout_s": 20.0,
                  "graceful_shutdown_wait_loop_s": 0.5}
        voice = ["--test-voice", "--max-sessions", "6", "--shutdown-deadline", "5"]
        url = deploy(RayServeConfig(app_name="open", num_replicas=2, **common), server_args(voice))
        secure = deploy(
            RayServeConfig(app_name="secure", route_prefix="/secure", num_replicas=1, **common),
            server_args(voice + ["--api-key", API_KEY]),
        )
        yield url, secure, port
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture
def url(serve_urls):
    return serve_urls[0]


async def test_websocket_session_streams_every_frame(url):
    """Two utterances word by word on one socket: the session (and its seq counter) lives
    on one replica for the socket's whole life, and no frame is lost or reordered."""
    chunks: list[AudioChunk] = []
    events: list[dict] = []
    async with VoiceStreamClient(url).session() as s:  # FrameGapError on any seq gap
        for text in ("Hello there, this is one replica.", "And a second utterance on the same socket."):
            for word in text.split(" "):
                await s.send_text(word + " ")
            await s.flush()
            async for item in s.events(until=("flushed",)):
                (chunks if isinstance(item, AudioChunk) else events).append(item)
        await s.close()
        rest = [i async for i in s.events()]  # ends only on a normal (1000) close
    assert [e["type"] for e in events] == ["audio_start", "done", "flushed"] * 2
    assert not rest
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    for utt in (1, 2):
        mine = [c for c in chunks if c.utterance == utt]
        offsets = np.cumsum([0] + [len(c.samples) for c in mine[:-1]])
        assert [c.sample_offset for c in mine] == offsets.tolist()  # contiguous audio
        done = next(e for e in events if e["type"] == "done" and e["utterance"] == utt)
        assert abs(sum(len(c.samples) for c in mine) / 16000 * 1000 - done["stats"]["audio_ms"]) < 120
    pcm = np.concatenate([c.samples for c in chunks]).astype(np.float64) / 32768
    assert np.sqrt(np.mean(pcm**2)) > 0.03  # audio, not silence


async def test_speech_endpoint_streams_a_valid_wav(url):
    body = {"model": "tts-1", "input": "Hello there. A second sentence.", "voice": "alloy", "response_format": "wav"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/audio/speech", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "audio/wav"
            assert resp.headers[REPLICA_HEADER]
            data = await resp.read()
        async with http.post(url + "/v1/audio/speech", json={**body, "response_format": "pcm"}) as resp:
            pcm = np.frombuffer(await resp.read(), dtype="<i2")
        async with http.post(url + "/v1/audio/speech", json={**body, "voice": "nobody"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "voice"  # the server's own error, relayed
    riff, _, wave, fmt = struct.unpack("<4sI4s4s", data[:16])
    assert (riff, wave, fmt) == (b"RIFF", b"WAVE", b"fmt ")
    channels, rate = struct.unpack("<HI", data[22:28])
    assert (channels, rate) == (1, 24000)
    samples = np.frombuffer(data[44:], dtype="<i2")
    assert samples.size > 24000 * 0.5 and np.abs(samples).max() > 1000
    assert abs(samples.size - pcm.size) < 240  # same audio either way (greedy decoding)


async def test_health_and_metrics_from_both_replicas(url):
    seen: set[str] = set()
    async with aiohttp.ClientSession() as http:
        for _ in range(40):  # Serve picks a replica per request; both answer well before 40
            async with http.get(url + "/healthz") as resp:
                assert resp.status == 200
                health = await resp.json()
                seen.add(resp.headers[REPLICA_HEADER])
            if len(seen) == 2:
                break
        async with http.get(url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    assert health["status"] == "ok" and health["voices"] == ["test"] and health["max_sessions"] == 6
    assert len(seen) == 2
    assert metric(text, "voicestream_sessions") >= 0


async def test_malformed_message_is_an_error_and_other_sessions_keep_working(url):
    async with ws_client(url) as bad:
        await bad.send(type="start")
        await bad.wait_for("started")
        await bad.ws.send_str("{not json")
        err = await bad.wait_for("error")
        assert err["code"] == "invalid_json" and err["fatal"] is False
        # meanwhile another session (maybe on the other replica) speaks normally
        pcm, stats = await VoiceStreamClient(url).synthesize("Still working fine.")
        assert pcm.size > 0 and stats["audio_ms"] > 0
        # and the session that erred is still usable
        await bad.send(type="text", text="Now a valid sentence.")
        await bad.send(type="flush")
        await bad.wait_for("flushed")
        assert bad.rx.frames and bad.rx.of("done")
    async with ws_client(url) as big:  # over --max-msg-size: the server's 1009 comes through
        await big.send(type="start")
        await big.wait_for("started")
        await big.ws.send_str(json.dumps({"type": "text", "text": "x" * 70_000}))
        assert (await big.closed()).close_code == 1009


async def test_auth_and_route_prefix(serve_urls):
    secure = serve_urls[1]
    assert secure.endswith("/secure")
    with pytest.raises(AuthenticationError) as info:
        await VoiceStreamClient(secure, reconnect_attempts=0).synthesize("Hello.")
    assert info.value.status == 401  # the server's refusal, relayed as an HTTP denial by the proxy
    async with aiohttp.ClientSession() as http:
        body = {"model": "tts-1", "input": "Hello.", "voice": "test"}
        async with http.post(secure + "/v1/audio/speech", json=body) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        async with http.post(secure + "/v1/audio/speech", json=body,
                             headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
            assert resp.status == 200 and len(await resp.read()) > 44
    pcm, _ = await VoiceStreamClient(secure, api_key=API_KEY).synthesize("Hello.")
    assert pcm.size > 0


async def test_more_sessions_than_one_replica_holds(url):
    """8 concurrent sessions, --max-sessions 6 per replica: Serve spreads them, and a replica
    that is full refuses with 1013, which the client retries; every session completes."""
    results = await asyncio.gather(*[VoiceStreamClient(url).synthesize(f"Session number {i}.") for i in range(8)])
    assert all(pcm.size > 0 and stats["audio_ms"] > 0 for pcm, stats in results)


async def test_removing_an_app_lets_its_open_call_finish(serve_urls):
    """Serve stops routing to a replica being removed but waits for its open requests: a
    call in the middle of an utterance hears it to the end and closes normally."""
    config = RayServeConfig(app_name="drain", route_prefix="/drain", host="127.0.0.1", port=serve_urls[2], num_cpus=0.25,
                            graceful_shutdown_timeout_s=30.0, graceful_shutdown_wait_loop_s=0.5)
    url = await asyncio.to_thread(deploy, config, server_args(["--test-voice", "--test-voice-pace", "0.3"]))
    chunks: list[AudioChunk] = []
    async with VoiceStreamClient(url).session() as s:
        await s.send_text("This sentence is still being spoken while the replica is removed. " * 2)
        await s.flush()
        removal = None
        async for item in s.events(until=("flushed",)):
            if isinstance(item, AudioChunk):
                chunks.append(item)
                if removal is None:
                    removal = asyncio.ensure_future(asyncio.to_thread(serve.delete, "drain"))
            elif item["type"] == "done":
                done = item
        assert removal is not None and not removal.done()  # Serve is waiting for this call
        await s.close()
        assert not [i async for i in s.events()]  # a normal close, not a cut connection
    await asyncio.wait_for(removal, 60)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert abs(sum(len(c.samples) for c in chunks) / 16000 * 1000 - done["stats"]["audio_ms"]) < 120
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as resp:
        assert resp.status == 404  # gone from the proxy's routes
