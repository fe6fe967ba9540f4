"""The relay's health endpoints (aiohttp): ``/live``, ``/ready``, ``/status``.

* ``GET /live``: 200 while the process serves (the event loop answers).
* ``GET /ready``: 200 while the relay takes new allocations; 503 before its listeners are up
  and while it drains (so a Service stops sending new clients).
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


HEALTH = web.AppKey("health", HealthState)


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    state = request.app[HEALTH]
    is_ready = state.serving() and not state.stats.draining
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
