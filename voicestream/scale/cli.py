"""``voicestream serve-ray``: ``voicestream serve``'s flags, served by Ray Serve replicas.

Parsing needs no Ray (so ``--help`` works on a base install); running imports it and
says how to install it when it is missing.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading

__all__ = ["add_arguments", "main"]

_RAY_HINT = "voicestream serve-ray needs Ray Serve: pip install 'voicestream[ray]'"
# attributes that configure Ray, not the voice server each replica runs
_RAY_ONLY = frozenset(
    {
        "func", "command", "replicas", "min_replicas", "max_replicas", "target_ongoing_requests",
        "upscale_delay", "downscale_delay", "num_cpus", "num_gpus", "http_headroom", "graceful_shutdown_timeout",
        "ray_address", "ray_num_cpus", "app_name", "route_prefix",
    }
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..server import cli as serve_cli

    serve_cli.add_arguments(p)  # --host/--port bind Serve's HTTP proxy; replicas listen on loopback
    p.set_defaults(port=8000)
    g = p.add_argument_group("Ray Serve")
    g.add_argument("--ray-address", default="local",
                   help="'local' starts a Ray instance in this process (default); 'auto' joins the running "
                        "cluster on this node; or a cluster address (ray://host:10001, host:6379)")
    g.add_argument("--ray-num-cpus", type=float, default=None, help="CPUs of a 'local' Ray instance (default: all)")
    g.add_argument("--replicas", type=int, default=None, help="fixed number of replicas (default 1 without autoscaling)")
    g.add_argument("--min-replicas", type=int, default=None, help="autoscaling lower bound (enables autoscaling)")
    g.add_argument("--max-replicas", type=int, default=None, help="autoscaling upper bound (enables autoscaling)")
    g.add_argument("--target-ongoing-requests", type=float, default=None,
                   help="sessions per replica autoscaling aims for (default: 3/4 of --max-sessions)")
    g.add_argument("--upscale-delay", type=float, default=30.0, help="seconds of sustained load before adding replicas")
    g.add_argument("--downscale-delay", type=float, default=600.0, help="seconds of low load before removing replicas")
    g.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica")
    g.add_argument("--num-gpus", type=float, default=0.0, help="GPUs reserved per replica (fractions share one GPU)")
    g.add_argument("--http-headroom", type=int, default=4,
                   help="ongoing requests per replica beyond --max-sessions (health checks, metrics, HTTP speech)")
    g.add_argument("--graceful-shutdown-timeout", type=float, default=300.0,
                   help="seconds a replica being removed keeps serving its open calls before it is killed")
    g.add_argument("--app-name", default="voicestream")
    g.add_argument("--route-prefix", default="/")


def ray_config(args: argparse.Namespace):
    """The :class:`~.config.RayServeConfig` these arguments describe (invalid: SystemExit)."""
    try:
        return _ray_config(args)
    except ValueError as exc:
        raise SystemExit(f"serve-ray: {exc}") from None


def _ray_config(args: argparse.Namespace):
    from .config import AutoscalingSpec, RayServeConfig

    autoscaling = None
    if args.min_replicas is not None or args.max_replicas is not None:
        if args.replicas is not None:
            raise SystemExit("--replicas fixes the replica count; use it or --min-replicas/--max-replicas, not both")
        lo = args.min_replicas if args.min_replicas is not None else 1
        autoscaling = AutoscalingSpec(
            min_replicas=lo, max_replicas=args.max_replicas if args.max_replicas is not None else max(lo, 1),
            target_ongoing_requests=args.target_ongoing_requests,
            upscale_delay_s=args.upscale_delay, downscale_delay_s=args.downscale_delay,
        )
    return RayServeConfig(
        app_name=args.app_name, route_prefix=args.route_prefix, host=args.host, port=args.port,
        num_replicas=args.replicas or 1, autoscaling=autoscaling, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        http_headroom=args.http_headroom, graceful_shutdown_timeout_s=args.graceful_shutdown_timeout,
    )


def replica_args(args: argparse.Namespace) -> dict:
    """The ``voicestream serve`` arguments each replica loads its voices and limits from."""
    return {k: v for k, v in vars(args).items() if k not in _RAY_ONLY}


def main(args: argparse.Namespace) -> int:
    try:
        import ray
        from ray import serve

        from .ray_serve import deploy
    except ImportError:
        raise SystemExit(_RAY_HINT) from None

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ray_config(args)
    started_here = args.ray_address == "local"
    if started_here:
        ray.init(address="local", num_cpus=args.ray_num_cpus, include_dashboard=False)
    else:
        ray.init(address=args.ray_address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        url = deploy(config, replica_args(args))
        ws = "ws" + url[4:]
        scaling = (f"{config.autoscaling.min_replicas}-{config.autoscaling.max_replicas} replicas (autoscaling)"
                   if config.autoscaling else f"{config.num_replicas} replica(s)")
        print(f"voicestream on Ray Serve: {url}  ({scaling})", flush=True)
        print(f"  websocket {ws}/v1/stream   speech POST {url}/v1/audio/speech   health {url}/healthz", flush=True)
        print("Ctrl-C to stop (open calls finish first).", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        print("stopping: replicas drain their sessions ...", flush=True)
        try:
            serve.delete(config.app_name)  # waits while replicas drain (graceful_shutdown_timeout_s at most)
        finally:
            if started_here:
                serve.shutdown()
                ray.shutdown()
    return 0
