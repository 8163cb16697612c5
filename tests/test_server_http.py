"""HTTP: OpenAI-compatible speech (with the official client), healthz, metrics."""
import io
import wave

import aiohttp
import numpy as np
import pytest
from server_util import metric, running_server, speak, until

from voicestream.server.audio import pcm16_decode

pytestmark = pytest.mark.usefixtures("one_torch_thread")
openai = pytest.importorskip("openai")  # test extra: pip install 'voicestream[server-test]'

INPUT = "Hello from the speech endpoint. It streams sentence by sentence."


async def test_openai_client_streams_wav(formant_voice):
    async with running_server([formant_voice], api_key="k") as (server, url):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        chunks = []
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=INPUT, response_format="wav"
        ) as resp:
            assert resp.headers["content-type"] == "audio/wav"
            assert resp.headers.get("transfer-encoding") == "chunked"
            async for chunk in resp.iter_bytes():
                chunks.append(chunk)
        body = b"".join(chunks)
        assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
        with wave.open(io.BytesIO(body[:40] + (len(body) - 44).to_bytes(4, "little") + body[44:])) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (24000, 2, 1)
            audio = pcm16_decode(w.readframes(w.getnframes()))
        assert audio.size / 24000 > 2.0 and np.sqrt(np.mean(audio**2)) > 0.03
        requests = 'voicestream_http_speech_requests_total{status="200"}'
        await until(lambda: server.metrics.http_requests.get("200") == 1)
        text = server.metrics.render()
        assert metric(text, requests) == 1
        assert metric(text, "voicestream_active_generations") == 0
        await client.close()


async def test_openai_client_pcm_and_speed(formant_voice):
    async with running_server([formant_voice]) as (_, url):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        lengths = {}
        for speed in (1.0, 2.0):
            resp = await client.audio.speech.create(
                model="tts-1", voice="test", input=INPUT, response_format="pcm", speed=speed
            )
            lengths[speed] = len(resp.content) / 2 / 24000
        assert 1.6 < lengths[1.0] / lengths[2.0] < 2.4  # twice as fast, about half as long
        await client.close()


async def test_mp3_when_lameenc_is_installed(formant_voice):
    try:
        import lameenc  # noqa: F401
        have_lame = True
    except ImportError:
        have_lame = False
    async with running_server([formant_voice]) as (_, url):
        async with aiohttp.ClientSession() as http:
            r = await http.post(url + "/v1/audio/speech", json={"model": "tts-1", "input": INPUT, "voice": "alloy", "response_format": "mp3"})
            body = await r.read()
    if have_lame:
        assert r.status == 200 and r.headers["Content-Type"] == "audio/mpeg"
        assert body[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2") or body[:3] == b"ID3"
        assert len(body) > 5000
    else:
        assert r.status == 400 and b"lameenc" in body


@pytest.mark.parametrize(
    "body, param, code",
    [
        ({"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "opus"}, "response_format", "unsupported_response_format"),
        ({"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "ogg"}, "response_format", "invalid_value"),
        ({"model": "tts-1", "voice": "alloy"}, "input", "missing_required_parameter"),
        ({"model": "tts-1", "input": 5, "voice": "alloy"}, "input", "invalid_type"),
        ({"model": "tts-1", "input": "...", "voice": "alloy"}, "input", "empty_input"),
        ({"model": "tts-1", "input": "x" * 5000, "voice": "alloy"}, "input", "string_above_max_length"),
        ({"model": "tts-1", "input": "hi", "voice": "nobody"}, "voice", "invalid_value"),
        ({"model": "tts-1", "input": "hi", "voice": "alloy", "speed": 10}, "speed", "invalid_value"),
        ({"model": "tts-1", "input": "hi", "voice": "alloy", "speed": "fast"}, "speed", "invalid_type"),
        ({"model": "tts-1", "input": "hi", "voice": "alloy", "colour": "red"}, "colour", "unknown_parameter"),
    ],
)
async def test_speech_bad_requests(formant_voice, body, param, code):
    async with running_server([formant_voice]) as (_, url):
        async with aiohttp.ClientSession() as http:
            r = await http.post(url + "/v1/audio/speech", json=body)
            err = (await r.json())["error"]
            r2 = await http.post(url + "/v1/audio/speech", data=b"{oops", headers={"Content-Type": "application/json"})
    assert r.status == 400 and err["param"] == param and err["code"] == code and err["type"] == "invalid_request_error"
    assert r2.status == 400


async def test_openai_client_raises_on_bad_request(formant_voice):
    async with running_server([formant_voice]) as (_, url):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="flac")
        assert "not supported" in str(err.value)
        await client.close()


async def test_healthz_and_metrics_after_traffic(formant_voice):
    async with running_server([formant_voice]) as (server, url):
        await speak(url, "Counting this one.")
        await until(lambda: not server.sessions)
        async with aiohttp.ClientSession() as http:
            h = await (await http.get(url + "/healthz")).json()
            r = await http.get(url + "/metrics")
            text = await r.text()
    assert h == {"status": "ok", "voices": ["test"], "sessions": 0, "max_sessions": 64}
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert metric(text, "voicestream_sessions") == 0
    assert metric(text, "voicestream_sessions_total") == 1
    assert metric(text, "voicestream_ttfa_seconds_count") == 1
    assert metric(text, "voicestream_rtf_count") == 1
    assert metric(text, "voicestream_accepted_per_target_forward_count") == 1
    assert metric(text, 'voicestream_utterances_total{outcome="completed"}') == 1
    assert metric(text, "voicestream_audio_seconds_total") > 0.5


async def test_client_leaving_mid_stream_stops_generation(paced_voice):
    async with running_server([paced_voice]) as (server, url):
        async with aiohttp.ClientSession() as http:
            r = await http.post(url + "/v1/audio/speech", json={"model": "tts-1", "voice": "paced", "input": "Talk. " * 200})
            assert r.status == 200
            await r.content.readexactly(44 + 4800)  # header and some audio
            assert server.metrics.generations.value == 1
            r.close()  # hang up mid-answer
        await until(lambda: server.metrics.generations.value == 0 and server.http_streams == 0, timeout=5)
        await until(lambda: server.metrics.http_requests.get("499") == 1)

