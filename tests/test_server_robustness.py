"""Bad input, limits, auth, disconnects and backpressure: each hurts only its own session."""
import asyncio
import json
import time

import aiohttp
import pytest
from server_util import Client, metric, running_server, speak, until, ws_client

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LONG = "This sentence keeps the voice busy for a while, so that things can happen meanwhile. " * 4


async def test_bad_input_gets_error_events_and_session_survives(formant_voice):
    async with running_server([formant_voice]) as (server, url):
        async with ws_client(url) as c:
            await c.ws.send_bytes(b"\x00\xffgarbage")  # binary before start
            await c.send(type="text", text="hi")  # text before start
            await c.send(type="flush")
            await c.ws.send_str("{not json")
            await c.ws.send_str("[]")
            await c.send(type="sing")
            await c.send(type="start", gamma="four")
            await c.send(type="start", voice="nobody")
            await c.send(type="start", sample_rate=8000)  # valid
            await c.send(type="start")  # twice
            await c.send(type="text", text=42)
            await c.ws.send_bytes(b"\x01\x02\x03")  # odd length mic audio
            await c.send(type="text", text="Still w\u00f6rks \U0001f600 \u202e\u200b fine.")
            await c.send(type="flush")
            await c.wait_for("done")
            await c.send(type="close")
            rx = await c.closed()
    codes = [e["code"] for e in rx.of("error")]
    assert codes == [
        "not_started", "not_started", "not_started", "invalid_json", "invalid_message", "unknown_type",
        "invalid_field", "unknown_voice", "already_started", "invalid_field", "unsupported_audio",
    ]
    assert not any(e["fatal"] for e in rx.of("error"))
    assert rx.close_code == 1000 and rx.frames
    assert metric(server.metrics.render(), 'voicestream_errors_total{code="not_started"}') == 3


async def test_too_many_errors_closes_with_policy_violation(formant_voice):
    async with running_server([formant_voice], max_errors=3) as (_, url):
        async with ws_client(url) as c:
            for _ in range(5):
                await c.ws.send_str("nope")
            rx = await c.closed()
    assert rx.close_code == 1008
    assert rx.of("error")[-1]["code"] == "too_many_errors" and rx.of("error")[-1]["fatal"]


async def test_oversized_message_closes_only_that_session(formant_voice):
    async with running_server([formant_voice], max_msg_size=1024) as (server, url):
        async with ws_client(url) as other:
            await other.send(type="start")
            async with ws_client(url) as c:
                await c.send(type="start")
                await c.send(type="text", text="x" * 5000)
                rx = await c.closed()
            assert rx.close_code == 1009
            await other.send(type="text", text="I am unaffected.")
            await other.send(type="flush")
            await other.wait_for("done")
        await until(lambda: len(server.sessions) == 0)
    assert metric(server.metrics.render(), 'voicestream_errors_total{code="message_too_big"}') == 1


async def test_text_buffer_limit(paced_voice):
    async with running_server([paced_voice], max_text_chars=100) as (_, url):
        async with ws_client(url) as c:
            await c.send(type="start")
            await c.send(type="text", text="a" * 60)
            await c.send(type="text", text="b" * 60)  # 120 unspoken characters > 100
            err = await c.wait_for("error")
            assert err["code"] == "text_buffer_full" and not err["fatal"]
            await c.send(type="cancel")
            await c.wait_for("interrupted")
            await c.send(type="text", text="c" * 60)  # buffer emptied by cancel: accepted again
            await c.send(type="flush")
            await c.wait_for("done")
            assert len(c.rx.of("error")) == 1


async def test_max_sessions_rejects_with_1013(formant_voice):
    async with running_server([formant_voice], max_sessions=2) as (server, url):
        async with ws_client(url) as a, ws_client(url) as b:
            await a.send(type="start")
            await b.send(type="start")
            await a.wait_for("started")
            await b.wait_for("started")
            async with ws_client(url) as c:
                rx = await c.closed()
            assert rx.close_code == 1013 and rx.of("error")[0]["code"] == "server_busy"
        await until(lambda: len(server.sessions) == 0)
        rx = await speak(url, "Room again.")  # capacity is back
        assert rx.close_code == 1000 and rx.frames
    assert metric(server.metrics.render(), 'voicestream_sessions_rejected_total{reason="server_busy"}') == 1


async def test_idle_timeout_spares_busy_sessions(paced_voice):
    async with running_server([paced_voice], idle_timeout_s=0.4) as (_, url):
        async with ws_client(url) as idle, ws_client(url) as busy:
            await busy.send(type="start")
            await busy.send(type="text", text="Speaking for well over the idle timeout, without any new message.")
            await busy.send(type="flush")
            rx = await idle.closed(timeout=5)
            assert rx.close_code == 4408 and rx.of("error")[0]["code"] == "idle_timeout"
            done = await busy.wait_for("done", timeout=10)
            assert done["stats"]["audio_ms"] > 1000  # spoke for longer than the idle timeout, not closed


async def test_abrupt_disconnect_frees_generation(paced_voice, formant_voice):
    async with running_server([paced_voice, formant_voice]) as (server, url):
        async with ws_client(url) as c:
            await c.send(type="start")
            await c.send(type="text", text=LONG)
            await c.send(type="flush")
            await c.wait_for("audio_start")
            assert server.metrics.generations.value == 1
            c.ws._conn.transport.abort()  # no close frame: the peer just vanishes
        await until(lambda: server.metrics.generations.value == 0 and not server.sessions, timeout=3)
        rx = await speak(url, "The server is fine.", voice="test")
        assert rx.close_code == 1000 and rx.frames


async def test_backpressure_pauses_only_the_stuck_client(formant_voice):
    """A client that stops reading pauses its own generation (bounded memory); others are served."""
    text = "A long answer that the client will not read for a while. " * 8
    async with running_server([formant_voice], socket_send_buffer=4096, max_queued_audio_ms=400) as (server, url):
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url + "/v1/stream")
            await ws.send_str(json.dumps({"type": "start", "sample_rate": 48000}))
            await ws.send_str(json.dumps({"type": "text", "text": text}))
            await ws.send_str(json.dumps({"type": "flush"}))
            (session,) = server.sessions
            produced = lambda: sum(u.audio.samples_out for u in session._live.values())
            # the buffers between the server and a client that does not read (socket buffers,
            # the client library's queue, the outbox) hold a fixed amount of audio: wait until
            # it stops growing (how long that takes depends on the machine's speed), bounded
            last, deadline = -1, time.perf_counter() + 15
            while (first := produced()) != last and time.perf_counter() < deadline:
                last = first
                await asyncio.sleep(0.4)
            await asyncio.sleep(0.5)
            assert produced() == first > 0, "generation must be paused while the client is not reading"
            assert session.outbox.audio_ms <= 400 + 50
            total_s = len(text) * 0.075  # rough length of the whole answer
            assert first / 48000 < total_s / 2, "paused well before the end: buffers are bounded"
            # meanwhile another client is served normally
            t0 = time.perf_counter()
            other = await speak(url, "Not blocked by the stuck one.")
            assert other.close_code == 1000 and time.perf_counter() - t0 < 3
            assert other.of("done")[0]["stats"]["ttfa_ms"] < 1000
            # the stuck client reads again: everything arrives, in order, nothing lost
            c = Client(ws)
            await c.wait_for("done", timeout=20)
            assert c.rx.seqs() == list(range(len(c.rx.frames)))
            offsets = [h.sample_offset for h, _ in c.rx.frames]
            sizes = [len(p) // 2 for _, p in c.rx.frames]
            assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
            await ws.close()


async def test_api_key_on_websocket_and_http(formant_voice):
    async with running_server([formant_voice], api_key="sekret") as (_, url):
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(url + "/v1/stream")
            assert err.value.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(url + "/v1/stream", headers={"Authorization": "Bearer wrong"})
            r = await http.post(url + "/v1/audio/speech", json={"model": "m", "input": "hi", "voice": "alloy"})
            assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_api_key"
            assert (await http.get(url + "/metrics")).status == 401
            assert (await http.get(url + "/healthz")).status == 200
            assert (await http.get(url + "/")).status == 200
        async with ws_client(url, headers={"Authorization": "Bearer sekret"}) as c:
            await c.send(type="start")
            await c.wait_for("started")
        async with ws_client(url, path="/v1/stream?api_key=sekret") as c:
            await c.send(type="start")
            await c.wait_for("started")


async def test_origin_allow_list(formant_voice):
    async with running_server([formant_voice]) as (_, url):
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(url + "/v1/stream", origin="http://evil.example")
            assert err.value.status == 403
            ws = await http.ws_connect(url + "/v1/stream", origin=url)  # same host (the demo page)
            await ws.close()
    async with running_server([formant_voice], allowed_origins=("https://app.example",)) as (_, url):
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url + "/v1/stream", origin="https://app.example")
            await ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(url + "/v1/stream", origin=url)


class _BreaksMidway:
    """The formant voice, failing after two chunks when the text says so (a model crash)."""

    supports_speed = False

    def __init__(self, inner):
        self.inner, self.name, self.sample_rate = inner, "fragile", inner.sample_rate

    def stream(self, text, options, cancel, stats):
        for i, pcm in enumerate(self.inner.stream(text, options, cancel, stats)):
            if "crash" in text and i == 2:
                raise RuntimeError("CUDA error: device-side assert triggered")
            yield pcm


async def test_synthesizer_failure_is_reported_and_session_survives(formant_voice):
    async with running_server([_BreaksMidway(formant_voice)]) as (server, url):
        async with ws_client(url) as c:
            await c.send(type="start")
            await c.send(type="text", text="This one will crash, sadly.")
            await c.send(type="flush")
            err = await c.wait_for("error")
            assert err["code"] == "synthesis_failed" and "device-side" in err["message"] and not err["fatal"]
            await c.wait_for("done")
            await c.send(type="text", text="This one is fine.")
            await c.send(type="flush")
            await c.wait_for("done", 2)
            assert c.rx.seqs() == list(range(len(c.rx.frames)))
        await until(lambda: server.metrics.generations.value == 0)
    assert server.metrics.utterances.get("failed") == 1 and server.metrics.utterances.get("completed") == 1
