"""The relay's health endpoints (aiohttp): ``/live``, ``/ready``, ``/status``.

* ``GET /live``: 200 while the process serves (the event loop answers).
* ``GET /ready``: 503 before the listeners are up (and once they are closed), else 200, also
  while the relay drains (``"draining": true`` in the body) unless ``unready_on_drain``
  (``--drain-ready-status=not-ready``). A draining relay stays ready because kube-proxy
  deletes the UDP conntrack entries of endpoints that are not serving
  (kubernetes/kubernetes#137986, KEP-5989; l7mp/stunner#206): the calls the drain exists to
  keep would be rerouted to another pod, whose relay has no allocation for them. A
  terminating endpoint gets no new flows either way, and a new Allocate that still arrives
  is refused (403, RFC 8656 §7.2 allows any refusal).
* ``GET /status``: JSON ``{"allocations": {"udp": N, "tcp": N}, "draining": bool,
  "uptime": seconds, "connections_total": {...}, "bytes_received_total": {...},
  "bytes_sent_total": {...}, "reporting": {...}, "tls": {listener: certificate} or null,
  "tls_handshake_failures": N}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from relay.core.stats import RelayStats

__all__ = ["HEALTH", "HealthState", "create_app"]


@dataclass(slots=True)
class HealthState:
    """What the endpoints read: the counters and whether the listeners are up."""

    stats: RelayStats
    serving: Callable[[], bool]
    #: ``/ready`` answers 503 while draining (the behaviour before kube-proxy's conntrack
    #: cleanup made that cut calls; see the module docstring).
    unready_on_drain: bool = False


HEALTH = web.AppKey("health", HealthState)


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    state = request.app[HEALTH]
    is_ready = state.serving() and not (state.unready_on_drain and state.stats.draining)
    body = {"ready": is_ready, "draining": state.stats.draining}
    return web.json_response(body, status=200 if is_ready else 503)


async def status(request: web.Request) -> web.Response:
    stats = request.app[HEALTH].stats
    snapshot = stats.snapshot()
    return web.json_response(
        {
            "allocations": snapshot.allocations,
            "draining": stats.draining,
            "uptime": round(stats.uptime(), 3),
            "connections_total": snapshot.connections_total,
            "bytes_received_total": snapshot.bytes_received_total,
            "bytes_sent_total": snapshot.bytes_sent_total,
            "allocations_refused": dict(stats.refused),
            "reporting": dict(stats.reporting()) if stats.reporting else None,
            "tls": stats.tls() if stats.tls else None,
            "tls_handshake_failures": stats.tls_handshake_failures,
        }
    )


def create_app(state: HealthState) -> web.Application:
    app = web.Application()
    app[HEALTH] = state
    app.router.add_get("/live", live)
    app.router.add_get("/ready", ready)
    app.router.add_get("/status", status)
    return app
