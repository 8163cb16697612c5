"""HTTP routes: OpenAI-compatible ``POST /v1/audio/speech``, ``/healthz``, ``/metrics``, the demo page.

``/v1/audio/speech`` follows OpenAI's request and error shapes so the official client
works unchanged (``base_url=http://host:port/v1``).  Differences, deliberately:
``response_format`` defaults to ``wav`` (OpenAI: ``mp3``; mp3 needs the optional
``lameenc`` package here), opus/aac/flac are refused with a 400, and ``voice`` accepts
OpenAI's voice names as aliases of the default voice.  Audio is streamed with chunked
transfer encoding as segments are synthesised, so the first bytes arrive after the
first sentence, not after the whole input.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..text import EmptyTextError, SentenceSegmenter, normalize_text
from .audio import StreamingResampler, pcm16_encode, wav_header
from .keys import SERVER_KEY
from .synth import SegmentStats, SynthesisOptions
from ..threaded import ThreadedStream

if TYPE_CHECKING:
    from .app import VoiceServer

log = logging.getLogger("voicestream.server")

OPENAI_VOICES = frozenset(
    ["alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"]
)
OPENAI_SAMPLE_RATE = 24000  # OpenAI's pcm/wav output rate
_FORMATS = ("wav", "pcm", "mp3")
_UNSUPPORTED = ("opus", "aac", "flac")
_FIELDS = {"model", "input", "voice", "response_format", "speed", "instructions", "stream_format", "sample_rate"}


def openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def _mp3_encoder(sample_rate: int):
    try:
        import lameenc
    except ImportError:
        raise _BadRequest(
            "response_format 'mp3' needs the optional 'lameenc' package on the server "
            "(pip install 'voicestream[mp3]'); use 'wav' or 'pcm'",
            "response_format",
            "unsupported_response_format",
        ) from None
    enc = lameenc.Encoder()
    enc.set_bit_rate(64)
    enc.set_in_sample_rate(sample_rate)
    enc.set_channels(1)
    enc.set_quality(5)
    return enc


def _parse_speech(server: VoiceServer, body: Any) -> dict:
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    unknown = set(body) - _FIELDS
    if unknown:
        raise _BadRequest(f"unknown parameter(s): {sorted(unknown)}", sorted(unknown)[0], "unknown_parameter")
    for name in ("model", "input", "voice"):
        if name not in body:
            raise _BadRequest(f"missing required parameter '{name}'", name, "missing_required_parameter")
        if not isinstance(body[name], str):
            raise _BadRequest(f"'{name}' must be a string", name, "invalid_type")
    text = body["input"]
    if len(text) > server.config.max_http_input_chars:
        raise _BadRequest(
            f"'input' is longer than {server.config.max_http_input_chars} characters", "input", "string_above_max_length"
        )
    try:
        normalize_text(text)
    except EmptyTextError:
        raise _BadRequest("'input' has nothing speakable", "input", "empty_input") from None
    fmt = body.get("response_format", "wav")
    if not isinstance(fmt, str):
        raise _BadRequest("'response_format' must be a string", "response_format", "invalid_type")
    if fmt in _UNSUPPORTED:
        raise _BadRequest(
            f"response_format {fmt!r} is not supported by this server; use one of {_FORMATS}",
            "response_format", "unsupported_response_format",
        )
    if fmt not in _FORMATS:
        raise _BadRequest(f"invalid response_format {fmt!r}; use one of {_FORMATS}", "response_format", "invalid_value")
    if body.get("stream_format", "audio") != "audio":
        raise _BadRequest("only stream_format 'audio' is supported", "stream_format", "invalid_value")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed):
        raise _BadRequest("'speed' must be a number", "speed", "invalid_type")
    if not 0.25 <= speed <= 4.0:
        raise _BadRequest("'speed' must be between 0.25 and 4.0", "speed", "invalid_value")
    rate = body.get("sample_rate", OPENAI_SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
        raise _BadRequest("'sample_rate' must be an integer in [8000, 48000]", "sample_rate", "invalid_value")
    name = body["voice"]
    synth = server.voice(None if name in OPENAI_VOICES else name)
    if synth is None:
        raise _BadRequest(
            f"unknown voice {name!r}; available: {sorted(server.voices)} (OpenAI names map to the default voice)",
            "voice", "invalid_value",
        )
    if speed != 1.0 and not synth.supports_speed:
        raise _BadRequest(f"voice {synth.name!r} does not support speed != 1.0", "speed", "unsupported_value")
    return {"text": text, "format": fmt, "speed": float(speed), "synth": synth, "sample_rate": rate}


async def speech_handler(request: web.Request) -> web.StreamResponse:
    server: VoiceServer = request.app[SERVER_KEY]
    if server.draining:
        server.metrics.http_requests.inc(1, "503")
        return openai_error(503, "server is shutting down", code="shutting_down")
    try:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _BadRequest("request body is not valid JSON", code="invalid_json") from None
        req = _parse_speech(server, body)
        mp3 = _mp3_encoder(req["sample_rate"]) if req["format"] == "mp3" else None
    except _BadRequest as exc:
        server.metrics.http_requests.inc(1, str(exc.status))
        return openai_error(exc.status, exc.message, param=exc.param, code=exc.code)

    synth, rate = req["synth"], req["sample_rate"]
    content_type = {"wav": "audio/wav", "pcm": "audio/pcm", "mp3": "audio/mpeg"}[req["format"]]
    resp = web.StreamResponse(headers={"Content-Type": content_type, "X-Sample-Rate": str(rate)})
    resp.enable_chunked_encoding()
    options = SynthesisOptions(speed=req["speed"])
    segmenter = SentenceSegmenter()
    segments = segmenter.push(req["text"]) + segmenter.flush()

    def produce(cancel: threading.Event) -> Iterator[bytes]:
        resampler = StreamingResampler(synth.sample_rate, rate)
        for seg in segments:
            if cancel.is_set():
                return
            for pcm in synth.stream(seg, options, cancel, SegmentStats()):
                out = resampler.push(pcm)
                if out.size:
                    yield pcm16_encode(out) if mp3 is None else bytes(mp3.encode(pcm16_encode(out)))
        tail = pcm16_encode(resampler.flush())
        yield tail if mp3 is None else bytes(mp3.encode(tail)) + bytes(mp3.flush())

    server.http_streams += 1
    server.metrics.generations.inc()
    stream = ThreadedStream(produce, max_ahead=server.config.worker_chunks, on_exit=server.metrics.generations.dec)
    status = "200"
    try:
        await resp.prepare(request)
        if req["format"] == "wav":
            await resp.write(wav_header(rate))
        async for data in stream:
            if data:
                await resp.write(data)
        await resp.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        status = "499"  # client went away: stop generating (finally)
        raise
    except Exception:
        status = "500"
        log.exception("speech request failed")
        raise
    finally:
        await stream.aclose(timeout=10)
        server.http_streams -= 1
        server.metrics.http_requests.inc(1, status)
    return resp


async def healthz_handler(request: web.Request) -> web.Response:
    server: VoiceServer = request.app[SERVER_KEY]
    status = 503 if server.draining else 200
    return web.json_response(
        {
            "status": "draining" if server.draining else "ok",
            "voices": sorted(server.voices),
            "sessions": len(server.sessions),
            "max_sessions": server.config.max_sessions,
        },
        status=status,
    )


async def metrics_handler(request: web.Request) -> web.Response:
    server: VoiceServer = request.app[SERVER_KEY]
    server.metrics.sessions.set(len(server.sessions))
    return web.Response(body=server.metrics.render().encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def demo_handler(request: web.Request) -> web.Response:
    html = resources.files("voicestream.server").joinpath("static", "index.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})
