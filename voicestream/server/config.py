"""Server limits and policies, one dataclass, with defaults safe for a public port.

Every limit exists because one client must not be able to hurt the others: message and
text-buffer caps bound memory per session, ``max_sessions`` bounds threads and CPU,
the idle and stalled-client timeouts reclaim sessions nobody uses, and the bounded
audio queue turns a client that stops reading into a paused generation rather than
growing memory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .vad import VadConfig

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # --- limits ---------------------------------------------------------------------------
    max_msg_size: int = 64 * 1024  # bytes per websocket message (aiohttp closes with 1009 above it)
    max_text_chars: int = 20_000  # text received but not yet synthesised, per session
    max_sessions: int = 64
    idle_timeout_s: float = 60.0  # no client message and nothing playing -> close
    stalled_client_timeout_s: float = 30.0  # a send blocked this long -> close the session
    max_errors: int = 20  # protocol errors before the session is closed (1008)
    max_http_input_chars: int = 4096  # OpenAI's own limit for /v1/audio/speech
    # --- streaming ------------------------------------------------------------------------
    max_queued_audio_ms: int = 2000  # audio encoded but not yet on the wire, per session
    worker_chunks: int = 4  # PCM chunks a worker may run ahead of the session
    text_stall_release_ms: int = 400  # text stopped arriving: speak finished words without waiting
    trim_leading_silence: bool = True
    preroll_ms: int = 20
    socket_send_buffer: int | None = None  # SO_SNDBUF for websocket connections (None = OS default)
    heartbeat_s: float | None = 20.0
    # --- security ---------------------------------------------------------------------------
    api_key: str | None = None  # bearer token required on /v1/* when set
    allowed_origins: tuple[str, ...] | None = None  # None = same host only; ("*",) = any
    # --- barge-in ---------------------------------------------------------------------------
    vad: VadConfig = field(default_factory=VadConfig)
    # --- shutdown ---------------------------------------------------------------------------
    shutdown_deadline_s: float = 10.0  # SIGTERM: utterances in flight get this long to finish
    # --- decoding defaults ------------------------------------------------------------------
    default_voice: str | None = None  # None = the first registered voice

    def __post_init__(self) -> None:
        for name in ("max_msg_size", "max_text_chars", "max_sessions", "max_queued_audio_ms", "worker_chunks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.idle_timeout_s <= 0 or self.stalled_client_timeout_s <= 0 or self.shutdown_deadline_s < 0:
            raise ValueError("timeouts must be positive")

    @staticmethod
    def api_key_from_env() -> str | None:
        return os.environ.get("VOICESTREAM_API_KEY") or None
