"""The aiohttp voice server a replica runs on loopback, started and drained from code.

``voicestream serve``'s :func:`~voicestream.server.app.run_server` owns its process (it
installs SIGTERM/SIGINT handlers and blocks until told to stop); a replica's process
belongs to its host framework, so the same lifecycle is offered here as two awaitable
steps: :meth:`LocalVoiceServer.start` and :meth:`LocalVoiceServer.stop`. The shutdown
order is run_server's: stop listening, let sessions finish within the deadline
(:meth:`VoiceServer.drain`), then close.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from aiohttp import web

from ..server.app import VoiceServer, create_app

__all__ = ["LocalVoiceServer"]

log = logging.getLogger("voicestream.scale")


class LocalVoiceServer:
    """A :class:`VoiceServer` listening on ``127.0.0.1:<ephemeral port>``."""

    def __init__(self, server: VoiceServer) -> None:
        self.server = server
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LocalVoiceServer:
        """Load the voices and config from ``voicestream serve`` arguments (once per replica)."""
        import torch

        from ..server.cli import build_config, load_voices, torch_threads

        torch.set_num_threads(torch_threads(args))
        logging.getLogger("voicestream").setLevel(str(args.log_level).upper())
        config = replace(build_config(args), host="127.0.0.1", port=0)  # loopback only: the bridge is the way in
        return cls(VoiceServer(config, load_voices(args)))

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the local voice server is not started")
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        """Listen on a free loopback port; returns the base URL."""
        self._runner = web.AppRunner(create_app(self.server), handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        sockets = self._site._server.sockets if self._site._server else []  # type: ignore[union-attr]
        self.port = int(sockets[0].getsockname()[1])
        self.server.bound = [s.getsockname() for s in sockets]
        return self.url

    async def stop(self) -> None:
        """Refuse new sessions, let open ones finish within ``shutdown_deadline_s``, close."""
        if self._runner is None:
            return
        runner, site, self._runner, self._site = self._runner, self._site, None, None
        log.warning("replica draining: finishing %d session(s) within %.1f s",
                    len(self.server.sessions), self.server.config.shutdown_deadline_s)
        self.server.draining = True
        if site is not None:
            await site.stop()
        await self.server.drain(self.server.config.shutdown_deadline_s)
        await runner.cleanup()
        self.server.close()
