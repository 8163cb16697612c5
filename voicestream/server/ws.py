"""The ``/v1/stream`` websocket handler: admission, the read loop, the writer task, teardown.

Everything that can go wrong with one client ends in this handler's ``finally``, which
cancels that session's synthesis and waits for its worker thread -- so a client that
vanishes mid-utterance frees its generation within one model step, and no failure of
one session reaches another.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from . import protocol as P
from .keys import SERVER_KEY
from .session import Session

if TYPE_CHECKING:
    from .app import VoiceServer

log = logging.getLogger("voicestream.server")


async def stream_handler(request: web.Request) -> web.StreamResponse:
    server: VoiceServer = request.app[SERVER_KEY]
    cfg = server.config
    ws = web.WebSocketResponse(
        max_msg_size=cfg.max_msg_size,
        heartbeat=cfg.heartbeat_s,
        compress=False,  # PCM does not compress; deflate would only burn CPU
        autoping=True,
    )
    if not ws.can_prepare(request).ok:
        return web.json_response({"error": {"code": "websocket_required", "message": "use a websocket"}}, status=426)
    await ws.prepare(request)
    if cfg.socket_send_buffer and request.transport is not None:
        sock = request.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.socket_send_buffer)

    refusal = server.refuse_session()
    if refusal is not None:
        code, message = refusal
        server.metrics.rejected.inc(1, code)
        await ws.send_str(P.error_event(code, message, fatal=True))
        await ws.close(code=P.CLOSE_TRY_AGAIN, message=code.encode())
        return ws

    session = Session(server)
    server.add_session(session)
    writer = asyncio.create_task(_write(session, ws), name=f"{session.id}-writer")
    watchdog = asyncio.create_task(_watch_idle(session), name=f"{session.id}-idle")
    try:
        async for msg in _messages(ws, session):
            if msg.type == WSMsgType.TEXT:
                session.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                session.on_audio(msg.data)
    except Exception:  # a bug in one session must not take the server down
        log.exception("session %s failed", session.id)
    finally:
        watchdog.cancel()
        await session.shutdown()
        if not writer.done():
            writer.cancel()
        await asyncio.gather(writer, watchdog, return_exceptions=True)
        if not ws.closed:
            await ws.close(code=WSCloseCode.GOING_AWAY)
        server.remove_session(session)
    return ws


async def _messages(ws: web.WebSocketResponse, session: Session):
    """Data messages until the socket closes (by either side)."""
    while not ws.closed:
        msg = await ws.receive()
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            yield msg
        elif msg.type == WSMsgType.ERROR:
            exc = ws.exception()
            if getattr(exc, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                session.metrics.errors.inc(1, P.ErrorCode.MESSAGE_TOO_BIG)
            return
        else:  # CLOSE / CLOSING / CLOSED
            return


async def _write(session: Session, ws: web.WebSocketResponse) -> None:
    """Run the session's writer, then close the socket with the code it chose."""
    try:
        code, reason = await session.run_writer(ws.send_bytes, ws.send_str)
    except (ConnectionError, RuntimeError):  # peer gone: the reader notices and tears down
        return
    except Exception:  # a bug while sending: end this session, not the server
        log.exception("writer of %s failed", session.id)
        code, reason = P.CLOSE_INTERNAL, "internal error"
    await ws.close(code=code, message=reason.encode()[:120])


async def _watch_idle(session: Session) -> None:
    """Close sessions nobody uses (no input for idle_timeout_s and nothing in flight)."""
    timeout = session.cfg.idle_timeout_s
    while True:
        await asyncio.sleep(min(1.0, timeout / 4))
        if session.closing:
            continue
        if session.idle and time.monotonic() - session.last_input > timeout:
            session.fatal(P.ErrorCode.IDLE_TIMEOUT, f"no messages for {timeout:g} s", P.CLOSE_IDLE)
            return
