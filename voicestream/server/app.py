"""Assembly: the shared server state, middlewares (auth, Origin), routes, and the
process lifecycle with graceful SIGTERM shutdown.

Graceful shutdown order matters: stop accepting first (so a load balancer moves new
calls elsewhere), then let every session finish what it was asked to say within
``shutdown_deadline_s`` (a caller should not hear a sentence cut in half because of a
deploy), then cancel whatever is left and close the sockets with 1001.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web

from . import protocol as P
from .config import ServerConfig
from .http import (
    demo_handler,
    healthz_handler,
    metrics_handler,
    openai_error,
    speech_handler,
)
from .keys import SERVER_KEY
from .metrics import ServerMetrics
from .session import Session
from .synth import Synthesizer
from .ws import stream_handler

__all__ = ["VoiceServer", "create_app", "run_server", "serve"]

log = logging.getLogger("voicestream.server")
_PROTECTED_PREFIXES = ("/v1/", "/metrics")


class VoiceServer:
    """State shared by every request: config, loaded voices, sessions, metrics."""

    def __init__(self, config: ServerConfig, voices: Iterable[Synthesizer]) -> None:
        self.config = config
        self.voices: dict[str, Synthesizer] = {}
        for v in voices:
            if v.name in self.voices:
                raise ValueError(f"two voices named {v.name!r}")
            self.voices[v.name] = v
        if not self.voices:
            raise ValueError("the server needs at least one voice")
        if config.default_voice is not None and config.default_voice not in self.voices:
            raise ValueError(f"default voice {config.default_voice!r} is not loaded")
        self.metrics = ServerMetrics()
        self.sessions: set[Session] = set()
        self.draining = False
        self.http_streams = 0

    def voice(self, name: str | None) -> Synthesizer | None:
        if name is None:
            name = self.config.default_voice or next(iter(self.voices))
        return self.voices.get(name)

    def refuse_session(self) -> tuple[str, str] | None:
        if self.draining:
            return P.ErrorCode.SHUTTING_DOWN, "server is shutting down"
        if len(self.sessions) >= self.config.max_sessions:
            return P.ErrorCode.SERVER_BUSY, f"server is full ({self.config.max_sessions} sessions); retry later"
        return None

    def add_session(self, session: Session) -> None:
        self.sessions.add(session)
        self.metrics.sessions_total.inc()
        self.metrics.sessions.set(len(self.sessions))

    def remove_session(self, session: Session) -> None:
        self.sessions.discard(session)
        self.metrics.sessions.set(len(self.sessions))

    async def drain(self, deadline_s: float) -> None:
        """Ask every session to finish and close (1001); cancel what is left at the deadline."""
        self.draining = True
        for s in list(self.sessions):
            s.begin_close(P.CLOSE_GOING_AWAY, P.ErrorCode.SHUTTING_DOWN)
        end = time.monotonic() + deadline_s
        while (self.sessions or self.http_streams) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        for s in list(self.sessions):
            s.fatal(P.ErrorCode.SHUTTING_DOWN, "shutdown deadline reached", P.CLOSE_GOING_AWAY)
        end = time.monotonic() + 2.0
        while self.sessions and time.monotonic() < end:
            await asyncio.sleep(0.05)

    def close(self) -> None:
        for v in self.voices.values():
            close = getattr(v, "close", None)
            if close is not None:
                close()


def _bearer_ok(request: web.Request, key: str) -> bool:
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    if token is None:
        token = request.query.get("api_key")  # browsers cannot set headers on a websocket
    return token is not None and hmac.compare_digest(token.encode(), key.encode())


def _origin_ok(request: web.Request, allowed: tuple[str, ...] | None) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (or a same-origin GET): nothing to protect against
    if allowed is not None:
        return "*" in allowed or origin.rstrip("/") in allowed
    return urlsplit(origin).netloc.lower() == request.host.lower()


@web.middleware
async def _security(request: web.Request, handler):
    server: VoiceServer = request.app[SERVER_KEY]
    cfg = server.config
    if request.path.startswith(_PROTECTED_PREFIXES):
        if not _origin_ok(request, cfg.allowed_origins):
            server.metrics.rejected.inc(1, "origin")
            return openai_error(403, "Origin not allowed", code="origin_not_allowed")
        if cfg.api_key and not _bearer_ok(request, cfg.api_key):
            server.metrics.rejected.inc(1, "auth")
            resp = openai_error(401, "missing or invalid API key (Authorization: Bearer ...)", code="invalid_api_key")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
    return await handler(request)


def create_app(server: VoiceServer) -> web.Application:
    # client_max_size bounds POST bodies (an input of 4096 characters is well under 64 KiB)
    app = web.Application(middlewares=[_security], client_max_size=max(64 * 1024, server.config.max_msg_size))
    app[SERVER_KEY] = server
    app.router.add_get("/", demo_handler)
    app.router.add_get("/healthz", healthz_handler)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/v1/stream", stream_handler)
    app.router.add_post("/v1/audio/speech", speech_handler)
    return app


async def run_server(server: VoiceServer, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives, then shut down gracefully."""
    cfg = server.config
    app = create_app(server)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / not POSIX
            pass
    addrs = [s.getsockname() for s in (site._server.sockets if site._server else [])]  # type: ignore[union-attr]
    log.warning("voicestream serving on %s (voices: %s)", ", ".join(f"{a[0]}:{a[1]}" for a in addrs), sorted(server.voices))
    server.bound = addrs
    if ready is not None:
        ready.set()
    await stop.wait()
    log.warning("shutting down: no new sessions; finishing %d session(s) within %.1f s", len(server.sessions), cfg.shutdown_deadline_s)
    server.draining = True
    await site.stop()  # stop listening; open connections stay up
    await server.drain(cfg.shutdown_deadline_s)
    await runner.cleanup()
    server.close()
    log.warning("shutdown complete")


def serve(server: VoiceServer) -> None:
    """Blocking entry point used by ``voicestream serve``."""
    asyncio.run(run_server(server))
