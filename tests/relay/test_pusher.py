"""The report pusher against real scalers on loopback (only name resolution is faked)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from relay.reporting.pusher import BACKOFF_FIRST, BACKOFF_MAX, Identity, ReportPusher, endpoints
from scaler import wire
from scaler.common import backoff as backoff_rule
from scaler.common.flags import HostPort
from scaler.server import ScalerServer
from tests.net import free_port
from tests.reports import created
from tests.scaler.helpers import scaler_config
from tests.waiting import eventually

IDENTITY = Identity(pod="relay-a", namespace="stunner", gateway="stunner-gateway")


class FakeRelay:
    """The relay side of the pusher: a state it can change at will."""

    def __init__(self) -> None:
        self.allocations: dict[wire.Transport, int] = {"udp": 0, "tcp": 0}
        self.connections = 0
        self.draining = False

    def snapshot(self) -> wire.RelayState:
        return wire.RelayState(
            allocations=dict(self.allocations),
            connections_total={"udp": self.connections},
            bytes_received_total={"client": self.connections * 10, "peer": 0},
            bytes_sent_total={"client": 0, "peer": self.connections * 20},
        )


def one_name(*addresses: str) -> Callable[[str], Awaitable[list[str] | None]]:
    async def resolve(host: str) -> list[str] | None:
        return list(addresses)

    return resolve


@pytest.fixture
async def start_scaler() -> AsyncIterator[Callable[..., Awaitable[ScalerServer]]]:
    servers: list[ScalerServer] = []

    async def start(host: str = "127.0.0.1", port: int = 0, **config: Any) -> ScalerServer:
        base = scaler_config(**config)
        server = ScalerServer(dataclasses.replace(base, http=HostPort(host, port)))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def relay_of(server: ScalerServer) -> Any:
    return server.service.fleet.get("stunner", "relay-a")


def test_endpoints_keep_the_host_header_and_use_each_address() -> None:
    found = endpoints("http://scaler.stunner.svc:8080/ignored", ["10.0.0.1", "fd00::1"])
    assert [e.url for e in found] == [
        "http://10.0.0.1:8080/v1/reports",
        "http://[fd00::1]:8080/v1/reports",
    ]
    assert {e.host_header for e in found} == {"scaler.stunner.svc:8080"}


def pusher_backoff(failures: int, rng: Any, ceiling: float = BACKOFF_MAX) -> float:
    return backoff_rule.delay(failures, initial=BACKOFF_FIRST, maximum=ceiling, rng=rng)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    assert pusher_backoff(1, lambda: 1.0) == pytest.approx(0.1)
    assert pusher_backoff(1, lambda: 0.0) == pytest.approx(0.05)
    assert pusher_backoff(4, lambda: 1.0) == pytest.approx(0.8)
    assert pusher_backoff(40, lambda: 1.0) == 5.0
    # After a very long outage the exponent stays bounded (no float overflow).
    assert pusher_backoff(100_000, lambda: 1.0) == 5.0
    # A pusher caps it at its report interval (tests/e2e: a restarted scaler is exact
    # again within one interval, however long it was away).
    assert pusher_backoff(40, lambda: 1.0, ceiling=0.5) == 0.5
    assert pusher_backoff(1, lambda: 1.0, ceiling=0.5) == pytest.approx(0.1)


async def test_changes_reach_every_scaler_behind_one_name(start_scaler: Any) -> None:
    port = free_port()
    first = await start_scaler("127.0.0.1", port)
    second = await start_scaler("127.0.0.2", port)
    relay = FakeRelay()
    pusher = ReportPusher(
        [f"http://scalers.test:{port}"],
        IDENTITY,
        relay,
        resolve=one_name("127.0.0.1", "127.0.0.2"),
    )
    await pusher.start()
    try:
        relay.allocations["udp"] = 7
        for n in range(3):
            pusher.record(created(f"a{n}"))
        for server in (first, second):
            await eventually(lambda s=server: s.service.scale().allocations == 7)  # type: ignore[misc]
            await eventually(lambda s=server: relay_of(s).created == {"udp": 3})  # type: ignore[misc]
        relay.allocations["udp"] = 2
        pusher.changed()
        for server in (first, second):
            await eventually(lambda s=server: s.service.scale().allocations == 2)  # type: ignore[misc]
    finally:
        await pusher.close()


async def test_heartbeats_without_changes(start_scaler: Any) -> None:
    server = await start_scaler()
    assert server.http_address is not None
    pusher = ReportPusher(
        [f"http://127.0.0.1:{server.http_address.port}"], IDENTITY, FakeRelay(), interval=0.05
    )
    await pusher.start()
    try:
        await eventually(lambda: relay_of(server) is not None and relay_of(server).seq >= 4)
    finally:
        await pusher.close()


async def test_scaler_back_after_outage_is_exact_and_drops_are_counted(
    start_scaler: Any,
) -> None:
    port = free_port()
    relay = FakeRelay()
    url = f"http://127.0.0.1:{port}"
    pusher = ReportPusher([url], IDENTITY, relay, interval=0.2, event_buffer=10)
    await pusher.start()
    try:
        await eventually(lambda: pusher.status()["seq"] == 1)  # the first attempt is failing
        relay.allocations["udp"] = 5
        relay.connections = 40
        for n in range(30):
            pusher.record(created(f"a{n}"))
        assert pusher.events_dropped == 20
        server = await start_scaler("127.0.0.1", port)
        await eventually(lambda: relay_of(server) is not None and relay_of(server).created)
        allocated = relay_of(server)
        assert server.service.scale().allocations == 5
        assert allocated.totals().connections == {"udp": 40}
        assert allocated.created == {"udp": 10}  # the 10 newest; 20 dropped and counted
    finally:
        await pusher.close()


async def test_a_lost_answer_never_counts_events_twice(start_scaler: Any) -> None:
    server = await start_scaler()
    assert server.http_address is not None
    scaler_url = f"http://127.0.0.1:{server.http_address.port}/v1/reports"
    dropped: list[int] = []

    async def forward_then_hang_up(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with aiohttp.ClientSession() as session:
            headers = {"Content-Type": "application/json"}
            async with session.post(scaler_url, data=body, headers=headers) as answer:
                payload = await answer.read()
                status = answer.status
        if wire.decode(body).events and not dropped:
            dropped.append(status)  # applied by the scaler; the relay never hears back
            assert request.transport is not None
            request.transport.close()
        return web.Response(body=payload, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/reports", forward_then_hang_up)
    runner = web.AppRunner(app)
    await runner.setup()
    proxy_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", proxy_port).start()
    relay = FakeRelay()
    pusher = ReportPusher([f"http://127.0.0.1:{proxy_port}"], IDENTITY, relay, interval=0.2)
    await pusher.start()
    try:
        await eventually(lambda: relay_of(server) is not None)
        for n in range(4):
            pusher.record(created(f"a{n}"))
        await eventually(
            lambda: bool(dropped) and server.service.ingest.stats.reports["duplicate"] >= 1
        )
        assert dropped == [202]
        assert relay_of(server).created == {"udp": 4}
    finally:
        await pusher.close()
        await runner.cleanup()


async def test_draining_then_exit_reports_zero(start_scaler: Any) -> None:
    server = await start_scaler()
    assert server.http_address is not None
    relay = FakeRelay()
    relay.allocations["udp"] = 9
    pusher = ReportPusher([f"http://127.0.0.1:{server.http_address.port}"], IDENTITY, relay)
    await pusher.start()
    await eventually(lambda: server.service.scale().allocations == 9)
    relay.draining = True
    pusher.changed()
    await eventually(lambda: relay_of(server).draining)
    assert server.service.scale().allocations == 0  # draining relays do not count
    relay.allocations["udp"] = 0
    await pusher.close()
    assert relay_of(server).allocations == 0


async def test_a_rejected_report_is_logged_and_pushing_goes_on(start_scaler: Any) -> None:
    server = await start_scaler(token="right")
    assert server.http_address is not None
    url = f"http://127.0.0.1:{server.http_address.port}"
    wrong = ReportPusher([url], IDENTITY, FakeRelay(), token="wrong", interval=0.05)
    await wrong.start()
    try:
        await eventually(lambda: server.service.ingest.stats.reports["unauthorized"] >= 2)
        status: Any = wrong.status()
        assert next(iter(status["scalers"].values()))["reports_rejected"] >= 2
        assert len(server.service.fleet) == 0
    finally:
        await wrong.close()
    right = ReportPusher([url], IDENTITY, FakeRelay(), token="right")
    await right.start()
    try:
        await eventually(lambda: len(server.service.fleet) == 1)
    finally:
        await right.close()


async def test_a_scaler_that_keeps_refusing_this_relay_shows_on_status_and_in_one_log(
    start_scaler: Any,
) -> None:
    """A newer instance of the same pod holds its place: this one is old_instance."""
    server = await start_scaler()
    assert server.http_address is not None
    url = f"http://127.0.0.1:{server.http_address.port}"
    later = dataclasses.replace(IDENTITY, instance="newer", started_at=IDENTITY.started_at + 1)
    newer = ReportPusher([url], later, FakeRelay())
    await newer.start()
    await eventually(lambda: relay_of(server) is not None)
    await newer.close()
    older = ReportPusher([url], IDENTITY, FakeRelay(), interval=0.05)
    with capture_logs() as logs:
        await older.start()
        try:
            await eventually(lambda: server.service.ingest.stats.reports["old_instance"] >= 6)
            scaler: Any = next(iter(older.status()["scalers"].values()))  # type: ignore[attr-defined]
            assert scaler["refusing"] == "old_instance" and scaler["refused_in_a_row"] >= 6
        finally:
            await older.close()
    warnings = [e for e in logs if e["event"] == "scaler refuses this relay's reports"]
    # Said at 2 and at 4 refusals in a row (then 8, 16, ...), never once per report.
    assert [e["in_a_row"] for e in warnings][:2] == [2, 4]
    assert len(warnings) < server.service.ingest.stats.reports["old_instance"]
    assert {e["refusal"] for e in warnings} == {"old_instance"}


async def test_forbidden_is_definitive_and_clears_when_the_scaler_counts_the_relay_again() -> None:
    answer = {"status": 403}

    async def reports(request: web.Request) -> web.Response:
        await request.read()
        if answer["status"] == 403:
            return web.json_response({"error": "not that pod's IP"}, status=403)
        return web.json_response({"result": "accepted", "seq": 1}, status=202)

    app = web.Application()
    app.router.add_post("/v1/reports", reports)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    pusher = ReportPusher([f"http://127.0.0.1:{port}"], IDENTITY, FakeRelay(), interval=0.05)
    with capture_logs() as logs:
        await pusher.start()
        try:

            def scaler() -> Any:
                return next(iter(pusher.status()["scalers"].values()))  # type: ignore[attr-defined]

            await eventually(lambda: scaler()["refusing"] == "forbidden", "refusing shown")
            # Definitive: each refused report is dropped, not retried with backoff.
            assert scaler()["failing"] == 0 and scaler()["reports_rejected"] >= 2
            answer["status"] = 202
            await eventually(lambda: scaler()["refusing"] is None, "refusal cleared")
            assert scaler()["refused_in_a_row"] == 0
        finally:
            await pusher.close()
            await runner.cleanup()
    events = [e["event"] for e in logs]
    assert "scaler refuses this relay's reports" in events
    assert "scaler counts this relay again" in events
