"""Serve voicestream from a Ray Serve deployment: same API, many replicas.

Each replica loads its voices once (from the arguments ``voicestream serve`` takes), runs
the unchanged aiohttp server on loopback (:class:`~.local.LocalVoiceServer`) and exposes
it through Serve's HTTP proxy with :class:`~.bridge.AiohttpBridge` as its ASGI ingress.
Serve routes each request -- a websocket included, for its whole life -- to one replica,
so session state never has to leave the replica that holds it.

    from voicestream.scale.ray_serve import RayServeConfig, deploy, server_args
    deploy(RayServeConfig(num_replicas=2), server_args(["--test-voice"]))

``docs/scaling.md`` explains the knobs and how to size a fleet.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

try:
    from ray import serve
except ImportError as exc:  # pragma: no cover - exercised by the CLI's message instead
    raise ImportError("Ray Serve is not installed: pip install 'voicestream[ray]'") from exc

import aiohttp

from .bridge import AiohttpBridge, lifespan
from .config import AutoscalingSpec, RayServeConfig
from .local import LocalVoiceServer

__all__ = ["AutoscalingSpec", "RayServeConfig", "VoiceStreamDeployment", "build_app", "deploy", "server_args"]

log = logging.getLogger("voicestream.scale")
REPLICA_HEADER = "X-Voicestream-Replica"


def server_args(argv: list[str]) -> dict[str, Any]:
    """Parse ``voicestream serve`` arguments into the plain dict a replica is built from."""
    from ..server import cli as serve_cli

    parser = argparse.ArgumentParser(prog="voicestream serve", add_help=False)
    serve_cli.add_arguments(parser)
    return vars(parser.parse_args(argv))


class _ReplicaIngress:
    """The ingress every replica serves: forwards to that replica's own bridge.

    Not the bridge itself because Serve pickles the ingress app when the class is
    decorated, long before a replica's server has a port; an instance, not a function,
    because Serve calls a plain function as an app builder.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        replica: VoiceStreamDeployment = serve.get_replica_context().servable_object
        await replica.bridge(scope, receive, send)


@serve.deployment
@serve.ingress(_ReplicaIngress())
class VoiceStreamDeployment:
    """One replica: voices loaded once, the aiohttp server on loopback, the bridge in front."""

    async def __init__(self, args: dict[str, Any]) -> None:
        ns = argparse.Namespace(**args)
        self.local = LocalVoiceServer.from_args(ns)
        upstream = await self.local.start()
        # no connection limit: every websocket holds one connection for its whole life
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))
        replica_id = serve.get_replica_context().replica_tag
        self.bridge = AiohttpBridge(upstream, self.http, extra_headers={REPLICA_HEADER: replica_id})
        log.warning("replica %s serving voices %s via %s", replica_id, sorted(self.local.server.voices), upstream)

    async def check_health(self) -> None:
        """Serve restarts a replica whose loopback server stopped answering."""
        try:
            async with self.http.get(self.local.url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status not in (200, 503):  # 503 = draining, which is expected during teardown
                    raise RuntimeError(f"/healthz answered {resp.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RuntimeError(f"the replica's voice server does not answer: {exc!r}") from exc

    async def __del__(self) -> None:
        """Teardown: Serve calls this once it stopped routing here; drain, then close."""
        local = getattr(self, "local", None)
        if local is not None:
            await local.stop()
        http = getattr(self, "http", None)
        if http is not None:
            await http.close()


def build_app(config: RayServeConfig, args: dict[str, Any]) -> Any:
    """The bound Serve application (what ``serve.run`` takes)."""
    max_sessions = int(args["max_sessions"])
    return VoiceStreamDeployment.options(**config.deployment_options(max_sessions)).bind(args)


def deploy(config: RayServeConfig, args: dict[str, Any], *, blocking: bool = False) -> str:
    """Start Serve's proxy (if Serve is not running yet) and deploy; returns the base URL.

    Ray must already be initialised (``ray.init``). Waits until every replica is up.
    """
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config, args), name=config.app_name, route_prefix=config.route_prefix, blocking=blocking)
    return base_url(config)


def base_url(config: RayServeConfig) -> str:
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    return f"http://{host}:{config.port}{config.route_prefix.rstrip('/')}"
