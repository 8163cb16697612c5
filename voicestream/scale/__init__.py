"""Beyond one machine: serve the same API from many replicas (``docs/scaling.md``).

Modules, one job each:

* :mod:`.bridge` -- an ASGI app that forwards HTTP requests and websocket messages to an
  aiohttp server on the same host. This is how a replica reuses ``voicestream serve``'s
  handlers unchanged instead of re-implementing the protocol in another framework.
* :mod:`.local` -- the aiohttp server a replica runs on ``127.0.0.1:<ephemeral port>``,
  with the same graceful drain as ``voicestream serve``.
* :mod:`.config` -- deployment settings (replicas, autoscaling, resources, draining).
* :mod:`.ray_serve` -- the Ray Serve deployment (per-replica voice loading, autoscaling,
  health checks, draining) and :func:`~.ray_serve.deploy`.
* :mod:`.cli` -- ``voicestream serve-ray``.

Ray is an optional extra (``pip install 'voicestream[ray]'``): only :mod:`.ray_serve`
imports it, and the ``voicestream`` command imports that only when ``serve-ray`` runs.
"""
