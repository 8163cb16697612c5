"""Deployment settings for Ray Serve, as plain dataclasses (no Ray import: the CLI parses
and validates them on a base install)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AutoscalingSpec", "RayServeConfig"]


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
