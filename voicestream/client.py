"""An async client for ``voicestream serve``'s websocket protocol (``docs/protocol.md``).

Why a library client rather than "just use aiohttp": the protocol has a few rules every
caller must get right and most get wrong the first time -- ``start`` must be
acknowledged before the session is usable, audio frames carry a session-wide ``seq``
whose gaps mean lost audio, a ``cancel`` drops the in-flight utterance's ``flushed``, and
a socket that dies halfway through a sentence must be loud, not a silently short WAV.

Reconnect policy: connecting is retried with exponential backoff *until the server has
acknowledged* ``start`` (server still booting, refused with 1013 while full or
draining, a dropped handshake).  Nothing is lost by retrying then, because no text has
been sent.  Once a session is live a dropped socket raises :class:`ConnectionLostError`:
re-sending half an utterance would repeat words the listener already heard, and only the
caller knows what to do about that.

    client = VoiceStreamClient("http://127.0.0.1:8080", api_key="...")
    pcm, stats = await client.synthesize("Hello there.")

    async with client.session() as s:
        await s.send_text("Hello ")
        await s.send_text("there.")
        await s.flush()
        async for item in s.events(until=("flushed",)):
            if isinstance(item, AudioChunk):
                play(item.samples)
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import aiohttp
import numpy as np

from .server.audio import mulaw_decode
from .server.protocol import CLOSE_NORMAL, CLOSE_TRY_AGAIN, FrameHeader, unpack_frame

__all__ = [
    "AudioChunk",
    "AuthenticationError",
    "ConnectionLostError",
    "FrameGapError",
    "ServerError",
    "StreamSession",
    "VoiceStreamClient",
    "VoiceStreamError",
]

STREAM_PATH = "/v1/stream"


# --- errors ----------------------------------------------------------------------------------
class VoiceStreamError(Exception):
    """Base class of everything this client raises."""


class AuthenticationError(VoiceStreamError):
    """HTTP 401/403 at the upgrade: wrong or missing API key, or Origin refused. Never retried."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ServerError(VoiceStreamError):
    """The server answered ``start`` with an ``error`` event (unknown voice, invalid field...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLostError(VoiceStreamError):
    """The socket closed while the session was live and we had not asked to close it.

    ``close_code`` is the websocket close code (1006 = dropped without a close frame);
    ``error`` the last fatal ``error`` event the server sent before closing, if any.
    """

    def __init__(self, message: str, close_code: int | None = None, error: dict | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.error = error


class FrameGapError(VoiceStreamError):
    """An audio frame's ``seq`` skipped: audio was lost on the way (never on a healthy link)."""


# --- what events() yields -------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioChunk:
    """One binary frame, decoded to 16-bit PCM whatever the wire encoding was."""

    seq: int
    utterance: int
    sample_offset: int
    flags: int
    pcm: bytes  # s16le mono at sample_rate
    sample_rate: int

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(self.pcm, dtype="<i2")

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


Item = Union[AudioChunk, dict]


def _to_s16(payload: bytes, encoding: str) -> bytes:
    if encoding == "pcm_s16le":
        return payload
    x = np.clip(np.round(mulaw_decode(payload).astype(np.float64) * 32768.0), -32768, 32767)
    return x.astype("<i2").tobytes()


def stream_url(url: str) -> str:
    """Accept ``http(s)://``/``ws(s)://`` base URLs or a full ``.../v1/stream`` URL."""
    base = url.rstrip("/")
    if base.startswith("http://"):
        base = "ws://" + base[7:]
    elif base.startswith("https://"):
        base = "wss://" + base[8:]
    return base if base.endswith(STREAM_PATH) else base + STREAM_PATH


class _Retry(Exception):
    """A connect attempt that failed in a way worth retrying."""


# --- the live session -----------------------------------------------------------------------------
class StreamSession:
    """One acknowledged websocket session. Sending and reading may run in different tasks;
    :meth:`events` must have a single consumer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, started: dict) -> None:
        self._ws = ws
        self.started = started
        self.encoding: str = started["encoding"]
        self.sample_rate: int = int(started["sample_rate"])
        self._next_seq = 0
        self._closing = False
        self._last_error: dict | None = None
        self._ended = False

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def _send(self, msg: dict) -> None:
        if self._ws.closed:
            raise ConnectionLostError("cannot send: the session's socket is closed", self._ws.close_code, self._last_error)
        try:
            await self._ws.send_str(json.dumps(msg))
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ConnectionLostError(f"send failed: {exc}", self._ws.close_code, self._last_error) from exc

    async def send_text(self, fragment: str) -> None:
        """Append text to the current utterance (a token, a word or a sentence)."""
        await self._send({"type": "text", "text": fragment})

    async def flush(self) -> None:
        """End the utterance: the server speaks what is buffered, then sends ``done`` + ``flushed``."""
        await self._send({"type": "flush"})

    async def cancel(self) -> None:
        """Stop at once; the server replies ``interrupted`` and sends no more of that audio."""
        await self._send({"type": "cancel"})

    async def close(self) -> None:
        """Finish everything sent so far, then the server closes with 1000 (``events`` ends)."""
        if not self._closing and not self._ws.closed:
            self._closing = True
            await self._send({"type": "close"})

    async def events(self, until: Iterable[str] = ()) -> AsyncIterator[Item]:
        """Yield :class:`AudioChunk` s and event dicts in arrival order.

        Ends after yielding an event whose type is in ``until`` (e.g. ``("flushed",
        "interrupted")`` for one utterance), or when the server closes normally after
        :meth:`close`.  Raises :class:`ConnectionLostError` on any other close and
        :class:`FrameGapError` on a skipped ``seq``.
        """
        stop = frozenset(until)
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                header: FrameHeader
                header, payload = unpack_frame(msg.data)
                if header.seq != self._next_seq:
                    raise FrameGapError(f"audio frame seq {header.seq}, expected {self._next_seq}: audio lost")
                self._next_seq = header.seq + 1
                yield AudioChunk(
                    header.seq, header.utterance, header.sample_offset, header.flags,
                    _to_s16(payload, self.encoding), self.sample_rate,
                )
            elif msg.type == aiohttp.WSMsgType.TEXT:
                ev = json.loads(msg.data)
                if ev.get("type") == "error" and ev.get("fatal"):
                    self._last_error = ev
                if ev.get("type") == "interrupted" and isinstance(ev.get("seq"), int):
                    self._next_seq = ev["seq"]  # dropped frames were never numbered; stays gap-free
                yield ev
                if ev.get("type") in stop:
                    return
            else:  # CLOSE / CLOSING / CLOSED / ERROR
                self._ended = True
                code = self._ws.close_code
                if self._closing and code == CLOSE_NORMAL:
                    return
                why = f" ({self._last_error['code']}: {self._last_error.get('message')})" if self._last_error else ""
                raise ConnectionLostError(
                    f"connection lost mid-session (close code {code}){why}", code, self._last_error
                )


# --- the client -----------------------------------------------------------------------------------
@dataclass
class VoiceStreamClient:
    """Connection settings plus the ``start`` defaults for every session it opens.

    ``reconnect_attempts`` is the number of *extra* tries after the first; the delay
    before try ``n`` is ``min(backoff_s * 2**n, backoff_max_s)`` with +-25 % jitter so a
    fleet of agents does not reconnect in lockstep after a server restart.
    """

    url: str
    api_key: str | None = None
    voice: str | None = None
    encoding: str = "pcm_s16le"
    sample_rate: int = 16000
    frame_ms: int | None = None
    start_options: dict[str, Any] = field(default_factory=dict)  # rule, gamma, temperature, seed, speed, barge_in
    reconnect_attempts: int = 5
    backoff_s: float = 0.1
    backoff_max_s: float = 2.0
    connect_timeout_s: float = 10.0
    max_msg_size: int = 4 * 1024 * 1024

    def start_message(self, **overrides: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "start", "encoding": self.encoding, "sample_rate": self.sample_rate}
        if self.voice is not None:
            msg["voice"] = self.voice
        if self.frame_ms is not None:
            msg["frame_ms"] = self.frame_ms
        msg.update(self.start_options)
        msg.update({k: v for k, v in overrides.items() if v is not None})
        return msg

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def _attempt(self, http: aiohttp.ClientSession, start: dict) -> tuple[aiohttp.ClientWebSocketResponse, dict]:
        try:
            ws = await http.ws_connect(
                stream_url(self.url), headers=self._headers(), max_msg_size=self.max_msg_size,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise AuthenticationError(exc.status, exc.message) from None
            raise _Retry(f"handshake failed: HTTP {exc.status}") from exc
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise _Retry(f"connect failed: {exc!r}") from exc
        try:
            await ws.send_str(json.dumps(start))
            return ws, await asyncio.wait_for(self._await_started(ws), self.connect_timeout_s)
        except BaseException as exc:
            await ws.close()
            if isinstance(exc, (asyncio.TimeoutError, aiohttp.ClientError, ConnectionError)):
                raise _Retry(f"no 'started' reply: {exc!r}") from exc
            raise

    @staticmethod
    async def _await_started(ws: aiohttp.ClientWebSocketResponse) -> dict:
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    raise VoiceStreamError("audio frame before 'started': not a voicestream server?")
                raise _Retry(f"socket closed before 'started' (close code {ws.close_code})")
            ev = json.loads(msg.data)
            if ev.get("type") == "started":
                return ev
            if ev.get("type") == "error":
                if ev.get("fatal"):  # server_busy / shutting_down: it closes with 1013
                    raise _Retry(f"{ev.get('code')}: {ev.get('message')} (close code {CLOSE_TRY_AGAIN})")
                raise ServerError(str(ev.get("code")), str(ev.get("message")))

    @contextlib.asynccontextmanager
    async def session(self, **start_overrides: Any) -> AsyncIterator[StreamSession]:
        """Connect (with retries), send ``start``, yield the acknowledged session.

        Leaving the block closes the socket at once (an unfinished utterance is abandoned);
        call :meth:`StreamSession.close` and drain :meth:`StreamSession.events` first to
        hear everything.
        """
        start = self.start_message(**start_overrides)
        async with aiohttp.ClientSession() as http:
            last: Exception | None = None
            for attempt in range(self.reconnect_attempts + 1):
                if attempt:
                    delay = min(self.backoff_s * 2 ** (attempt - 1), self.backoff_max_s)
                    await asyncio.sleep(delay * random.uniform(0.75, 1.25))
                try:
                    ws, started = await self._attempt(http, start)
                    break
                except _Retry as exc:
                    last = exc
            else:
                raise ConnectionLostError(
                    f"could not open a session at {stream_url(self.url)} after "
                    f"{self.reconnect_attempts + 1} attempts: {last}",
                    CLOSE_TRY_AGAIN if "1013" in str(last) else None,
                ) from last
            try:
                yield StreamSession(ws, started)
            finally:
                await ws.close()

    async def synthesize(self, text: str, **start_overrides: Any) -> tuple[np.ndarray, dict]:
        """Speak ``text`` as one utterance; returns (int16 PCM at ``sample_rate``, ``done`` stats)."""
        parts: list[bytes] = []
        stats: dict = {}
        async with self.session(**start_overrides) as s:
            await s.send_text(text)
            await s.close()  # close implies flush: done, flushed, then a normal close
            async for item in s.events():
                if isinstance(item, AudioChunk):
                    parts.append(item.pcm)
                elif item.get("type") == "done":
                    stats = item["stats"]
                elif item.get("type") == "error":
                    raise ServerError(str(item.get("code")), str(item.get("message")))
        return np.frombuffer(b"".join(parts), dtype="<i2").copy(), stats
