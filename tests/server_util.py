"""Helpers for the server tests: a real server on 127.0.0.1 (port 0) and a websocket client
that records events and frames exactly as they arrived."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field, replace

import aiohttp
import numpy as np

from voicestream.server import ServerConfig, VoiceServer
from voicestream.server.app import run_server
from voicestream.server.audio import decode
from voicestream.server.protocol import FrameHeader, unpack_frame

TEST_CONFIG = ServerConfig(port=0, heartbeat_s=None, shutdown_deadline_s=5.0)


@contextlib.asynccontextmanager
async def running_server(voices, **overrides):
    """A real server (AppRunner + TCPSite) on an ephemeral port; yields (server, base_url)."""
    server = VoiceServer(replace(TEST_CONFIG, **overrides), voices)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_server(server, ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 10)
    host, port = server.bound[0][:2]
    try:
        yield server, f"http://{host}:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@dataclass
class Received:
    events: list[dict] = field(default_factory=list)
    frames: list[tuple[FrameHeader, bytes]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "frame" or the event type, in arrival order
    times: dict[str, float] = field(default_factory=dict)  # first arrival of each event type
    close_code: int | None = None

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    def audio(self, encoding: str = "pcm_s16le", utterance: int | None = None) -> np.ndarray:
        parts = [decode(p, encoding) for h, p in self.frames if utterance is None or h.utterance == utterance]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def seqs(self) -> list[int]:
        return [h.seq for h, _ in self.frames]


class Client:
    """A websocket client that reads in the background into a :class:`Received`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.rx = Received()
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            now = time.perf_counter()
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.rx.frames.append(unpack_frame(msg.data))
                self.rx.order.append("frame")
            elif msg.type == aiohttp.WSMsgType.TEXT:
                ev = json.loads(msg.data)
                self.rx.events.append(ev)
                self.rx.order.append(ev["type"])
                self.rx.times.setdefault(ev["type"], now)
            self._new.set()
            self._new = asyncio.Event()
        self.rx.close_code = self.ws.close_code
        self._new.set()

    async def send(self, **msg) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 15.0) -> dict:
        """Wait until ``count`` events of ``kind`` arrived; returns the last one."""
        end = time.monotonic() + timeout
        while len(self.rx.of(kind)) < count:
            if self._reader.done():
                raise AssertionError(f"socket closed ({self.rx.close_code}) before {kind!r}; got {self.rx.order[-20:]}")
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {kind!r}; got {[e['type'] for e in self.rx.events]}")
            try:
                await asyncio.wait_for(self._new.wait(), left)
            except asyncio.TimeoutError:
                pass
        return self.rx.of(kind)[count - 1]

    async def closed(self, timeout: float = 60.0) -> Received:  # a hang guard, not a speed test
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.rx


@contextlib.asynccontextmanager
async def ws_client(base_url: str, *, headers: dict | None = None, path: str = "/v1/stream", **kwargs):
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.ws_connect(base_url + path, **kwargs) as ws:
            client = Client(ws)
            try:
                yield client
            finally:
                client._reader.cancel()


async def speak(base_url: str, text: str, *, words: bool = False, **start) -> Received:
    """One full session: start, text (whole or word by word), flush, close; returns what arrived."""
    async with ws_client(base_url) as c:
        await c.send(type="start", **start)
        if words:
            for w in text.split(" "):
                await c.send(type="text", text=w + " ")
        else:
            await c.send(type="text", text=text)
        await c.send(type="flush")
        await c.send(type="close")
        return await c.closed()


async def until(predicate, timeout=5.0, step=0.02):
    """Poll ``predicate`` until true (server-side bookkeeping finishes just after the client's)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


def metric(text: str, name: str) -> float:
    """One sample's value from a Prometheus exposition (exact name incl. labels)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)
