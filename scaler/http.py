"""The scaler's HTTP front end (aiohttp): reports, metrics, metrics-api, health.

Handlers are thin: they translate requests to :class:`ScalerService` calls, render the
private registry (``/metrics``) and show the :class:`scaler.readiness.Readiness` checks
(``/readyz``).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from scaler.exposition import render
from scaler.readiness import Readiness
from scaler.service import ScalerService
from scaler.wire import MAX_BODY_BYTES, encode_answer

SERVICE = web.AppKey("service", ScalerService)
REGISTRY = web.AppKey("registry", CollectorRegistry)
READINESS = web.AppKey("readiness", Readiness)


async def post_report(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body: bytes | None
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        body = None  # refuse before reading what we would throw away
    else:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body = None
    answer = service.submit_report(
        content_type=request.content_type if "Content-Type" in request.headers else "",
        authorization=request.headers.get("Authorization"),
        body=body,
        peer=request.remote,
    )
    headers = {"WWW-Authenticate": "Bearer"} if answer.status == 401 else None
    return web.Response(
        body=encode_answer(answer.body),
        status=answer.status,
        headers=headers,
        content_type="application/json",
    )


async def get_metrics(request: web.Request) -> web.Response:
    payload, content_type = render(request.app[REGISTRY], request.headers.get("Accept"))
    response = web.Response(body=payload)
    response.headers["Content-Type"] = content_type
    return response


async def get_scale(request: web.Request) -> web.Response:
    """KEDA metrics-api: one fleet's allocations and the replicas the rule asks for."""
    service = request.app[SERVICE]
    gateway = request.query.get("gateway") or None
    namespace = request.query.get("namespace") or None
    return web.json_response(service.scale(gateway, namespace).as_json())


async def get_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def get_readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    ready = readiness.ready
    body = {"ready": ready, "checks": readiness.checks()}
    return web.json_response(body, status=200 if ready else 503)


def create_app(
    service: ScalerService, registry: CollectorRegistry, readiness: Readiness
) -> web.Application:
    # Slack over the report limit so an oversized body is seen (and answered 413) by us.
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    app[SERVICE] = service
    app[REGISTRY] = registry
    app[READINESS] = readiness
    app.router.add_post("/v1/reports", post_report)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/v1/scale", get_scale)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    return app
