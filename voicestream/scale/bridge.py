"""An ASGI app that forwards every request to an aiohttp server on the same host.

Why a bridge and not a port of the handlers: Ray Serve (like most Python serving
frameworks) speaks ASGI, while ``voicestream serve`` is an aiohttp application whose
websocket protocol, limits, auth, backpressure and draining are already tested.
Forwarding over loopback costs one local hop per message and keeps a single
implementation of the protocol; nothing is parsed here.

What is forwarded, faithfully:

* HTTP: method, path, query, headers (``Authorization``, ``Origin`` and ``Host``
  included, so auth and the same-origin check behave exactly as on ``voicestream
  serve``), the body, and the response's status, headers and body -- streamed chunk by
  chunk as the upstream writes it (``/v1/audio/speech`` streams audio sentence by
  sentence).
* Websocket: the handshake (a refusal such as 401/403 is relayed as that HTTP status
  when the ASGI server supports denial responses, else as a close before accept), then
  text and binary messages in both directions, and the close code and reason in both
  directions.

Hop-by-hop headers (``Connection``, ``Transfer-Encoding``, ...) are not forwarded; each
hop frames its own body.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from multidict import CIMultiDict

__all__ = ["AiohttpBridge", "lifespan"]

log = logging.getLogger("voicestream.scale")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110 section 7.6.1, plus the websocket handshake headers aiohttp's client sets itself
_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "content-length",
        "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
_DENIAL_EXTENSION = "websocket.http.response"
_MAX_BODY = 1024 * 1024  # the upstream refuses far smaller bodies itself (413); this bounds the copy


def _valid_close_code(code: int | None) -> int:
    """A close code that may be sent on the wire (1005/1006/1015 are reserved for reporting)."""
    if code is None or code in (1004, 1005, 1006, 1015) or not (1000 <= code <= 4999) or 1016 <= code < 3000:
        return 1000
    return code


class AiohttpBridge:
    """ASGI callable forwarding to ``upstream`` (``http://127.0.0.1:PORT``).

    ``session`` is the shared aiohttp client session (created on the event loop that
    serves requests; it must not limit concurrent connections, since every websocket
    holds one). ``extra_headers`` are added to every HTTP response and websocket accept
    (a replica adds its id, so an operator can tell which replica answered).
    """

    def __init__(
        self,
        upstream: str,
        session: aiohttp.ClientSession,
        *,
        extra_headers: dict[str, str] | None = None,
        max_body: int = _MAX_BODY,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.session = session
        self.extra_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (extra_headers or {}).items()]
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(receive, send)

    # --- shared -------------------------------------------------------------------------------
    def _url(self, scope: Scope) -> str:
        path: str = scope.get("path") or "/"
        root = scope.get("root_path") or ""
        if root and path.startswith(root):  # a route prefix the upstream knows nothing about
            path = path[len(root):] or "/"
        query = scope.get("query_string") or b""
        return self.upstream + path + ("?" + query.decode("latin-1") if query else "")

    @staticmethod
    def _request_headers(scope: Scope) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for raw_name, raw_value in scope.get("headers") or ():
            name = raw_name.decode("latin-1")
            if name.lower() not in _HOP_BY_HOP:
                headers.add(name, raw_value.decode("latin-1"))
        client = scope.get("client")
        if client:
            prior = headers.get("X-Forwarded-For")
            headers["X-Forwarded-For"] = f"{prior}, {client[0]}" if prior else str(client[0])
        return headers

    def _response_headers(self, raw: Any) -> list[tuple[bytes, bytes]]:
        out = [(k.lower(), v) for k, v in raw if k.decode("latin-1").lower() not in _HOP_BY_HOP]
        return out + self.extra_headers

    # --- HTTP ---------------------------------------------------------------------------------
    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole request body, or None if it exceeds ``max_body`` or the client left."""
        parts: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            parts.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(parts)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_body(receive)
        if body is None:
            await self._error(send, 413, "request body too large", "request_too_large")
            return
        started = False
        try:
            async with self.session.request(
                scope["method"], self._url(scope), headers=self._request_headers(scope), data=body or None,
                allow_redirects=False, auto_decompress=False,
            ) as resp:
                await send({"type": "http.response.start", "status": resp.status,
                            "headers": self._response_headers(resp.raw_headers)})
                started = True
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("upstream request failed: %r", exc)
            if started:  # the upstream died mid-body: end the stream unfinished, so the client sees it cut
                raise
            await self._error(send, 502, "voice server replica unavailable", "upstream_unavailable")

    async def _error(self, send: Send, status: int, message: str, code: str) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
        headers = [(b"content-type", b"application/json")] + self.extra_headers
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # --- websocket ----------------------------------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        try:
            upstream = await self.session.ws_connect(
                self._url(scope), headers=self._request_headers(scope), protocols=tuple(scope.get("subprotocols") or ()),
                autoping=True, max_msg_size=0, compress=0,
            )
        except aiohttp.WSServerHandshakeError as exc:  # refused before the upgrade: 401, 403, 426 ...
            await self._deny(scope, send, exc.status, exc.message, exc.headers)
            return
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            log.warning("upstream websocket connect failed: %r", exc)
            await self._deny(scope, send, 502, "voice server replica unavailable", None)
            return
        accept: Message = {"type": "websocket.accept", "headers": list(self.extra_headers)}
        if upstream.protocol:
            accept["subprotocol"] = upstream.protocol
        await send(accept)
        to_client = asyncio.ensure_future(_pump_to_client(upstream, send))
        to_upstream = asyncio.ensure_future(_pump_to_upstream(receive, upstream))
        try:
            await asyncio.wait({to_client, to_upstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_client, to_upstream):
                task.cancel()
            await asyncio.gather(to_client, to_upstream, return_exceptions=True)
            if not upstream.closed:  # the client went away first: end the upstream session too
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(upstream.close(), 5.0)

    async def _deny(self, scope: Scope, send: Send, status: int, message: str, headers: Any) -> None:
        if _DENIAL_EXTENSION in (scope.get("extensions") or {}):
            body = json.dumps({"error": {"message": message, "code": status}}).encode()
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
                   if k.lower() not in _HOP_BY_HOP and k.lower() != "content-type"]
            raw += [(b"content-type", b"application/json")] + self.extra_headers
            await send({"type": "websocket.http.response.start", "status": status, "headers": raw})
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        else:  # closing before accept makes the ASGI server answer 403
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})


async def _pump_to_client(upstream: aiohttp.ClientWebSocketResponse, send: Send) -> None:
    """Upstream messages to the client, then the upstream's close code and reason."""
    code, reason = 1000, ""
    while True:
        msg = await upstream.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": msg.data})
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": msg.data})
        elif msg.type == aiohttp.WSMsgType.CLOSE:
            code, reason = int(msg.data), str(msg.extra or "")
            break
        else:  # CLOSING / CLOSED / ERROR: the upstream vanished without a close frame
            code = upstream.close_code or 1011
            break
    await send({"type": "websocket.close", "code": _valid_close_code(code), "reason": reason[:120]})


async def _pump_to_upstream(receive: Receive, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Client messages to the upstream until the client disconnects, then close it alike."""
    while True:
        msg = await receive()
        if msg["type"] == "websocket.receive":
            if msg.get("bytes") is not None:
                await upstream.send_bytes(msg["bytes"])
            elif msg.get("text") is not None:
                await upstream.send_str(msg["text"])
        elif msg["type"] == "websocket.disconnect":
            await upstream.close(code=_valid_close_code(msg.get("code")))
            return


async def lifespan(receive: Receive, send: Send) -> None:
    """Nothing to set up or tear down per ASGI lifespan: the replica owns the upstream."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
