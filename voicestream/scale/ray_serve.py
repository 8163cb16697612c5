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
from dataclasses import dataclass, field
from typing import Any

try:
    from ray import serve
except ImportError as exc:  # pragma: no cover - exercised by the CLI's message instead
    raise ImportError("Ray Serve is not installed: pip install 'voicestream[ray]'") from exc

import aiohttp

from .bridge import AiohttpBridge, lifespan
from .local import LocalVoiceServer

__all__ = ["AutoscalingSpec", "RayServeConfig", "VoiceStreamDeployment", "build_app", "deploy", "server_args"]

log = logging.getLogger("voicestream.scale")
REPLICA_HEADER = "X-Voicestream-Replica"


@dataclass(frozen=True)
class AutoscalingSpec:
    """Serve autoscaling on ongoing requests (one websocket = one ongoing request).

    ``target_ongoing_requests`` is the sessions per replica Serve aims for; set it to the
    sessions-per-replica your TTFA target allows (``docs/scaling.md``, capacity model).
    None means 3/4 of ``--max-sessions``. Scaling down is slow by default because a
    replica being removed waits for its calls to end (see ``graceful_shutdown_timeout_s``).
    """

    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: float | None = None
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError("autoscaling needs 0 <= min_replicas <= max_replicas and max_replicas >= 1")

    def to_ray(self, max_sessions: int) -> dict[str, Any]:
        target = self.target_ongoing_requests or max(1.0, 0.75 * max_sessions)
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": target,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
        }


@dataclass(frozen=True)
class RayServeConfig:
    """Deployment and proxy settings (the voice server's own settings are its arguments).

    ``num_replicas`` fixes the replica count; ``autoscaling`` (when set) replaces it.
    ``max_ongoing_requests`` per replica is ``--max-sessions + http_headroom``: Serve
    stops routing to a replica that is full of sessions but still lets ``/healthz``,
    ``/metrics`` and a few ``/v1/audio/speech`` calls through.
    ``graceful_shutdown_timeout_s`` is how long a replica being removed keeps serving its
    open calls before it is killed (Serve sends it no new ones meanwhile).
    """

    app_name: str = "voicestream"
    route_prefix: str = "/"
    host: str = "127.0.0.1"  # Serve's HTTP proxy (cluster-wide; only applied when this starts Serve)
    port: int = 8000
    num_replicas: int = 1
    autoscaling: AutoscalingSpec | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    http_headroom: int = 4
    graceful_shutdown_timeout_s: float = 300.0
    graceful_shutdown_wait_loop_s: float = 2.0
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    ray_actor_options: dict[str, Any] = field(default_factory=dict)  # e.g. runtime_env, resources

    def __post_init__(self) -> None:
        if self.num_replicas < 1:
            raise ValueError("num_replicas must be >= 1")
        if not self.route_prefix.startswith("/"):
            raise ValueError("route_prefix must start with '/'")

    def deployment_options(self, max_sessions: int) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        opts: dict[str, Any] = {
            "name": "VoiceStream",
            "max_ongoing_requests": max_sessions + self.http_headroom,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, **self.ray_actor_options},
        }
        if self.autoscaling is not None:
            opts["autoscaling_config"] = self.autoscaling.to_ray(max_sessions)
        else:
            opts["num_replicas"] = self.num_replicas
        return opts


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
