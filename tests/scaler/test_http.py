"""The scaler's HTTP API, driven through the real aiohttp app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from scaler import wire
from scaler.server import ScalerServer
from tests.clock import FakeClock
from tests.reports import T0, as_dict, as_json, created, deleted, report
from tests.scaler.helpers import scaler_config, value

JSON = {"Content-Type": "application/json"}
LABELS = {"namespace": "stunner", "gateway": "stunner-gateway", "pod": "relay-a"}

Client = TestClient[Any, Any]


@pytest.fixture
async def make_client(
    clock: FakeClock,
) -> AsyncIterator[Callable[..., Coroutine[Any, Any, tuple[Client, ScalerServer]]]]:
    """The HTTP app of a whole scaler (built, not started) with its listeners' checks ok."""
    clients: list[Client] = []

    async def make(**config: Any) -> tuple[Client, ScalerServer]:
        scaler = ScalerServer(scaler_config(**config), clock)
        scaler.readiness["http"].ok = scaler.readiness["grpc"].ok = True
        client: Client = TestClient(TestServer(scaler.app))
        await client.start_server()
        clients.append(client)
        return client, scaler

    yield make
    for client in clients:
        await client.close()


async def push(client: Client, body: bytes, headers: dict[str, str] | None = None) -> Any:
    headers = JSON if headers is None else headers
    # Without skip_auto_headers the client would add application/octet-stream itself.
    response = await client.post(
        "/v1/reports", data=body, headers=headers, skip_auto_headers=["Content-Type"]
    )
    return response.status, await response.json()


async def metrics(client: Client, accept: str | None = None) -> str:
    response = await client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert response.status == 200
    return await response.text()


async def test_report_lifecycle_answers(make_client: Any) -> None:
    client, _ = await make_client()
    assert await push(client, as_json(report(seq=2, udp=3))) == (
        202,
        {"result": "accepted", "seq": 2},
    )
    assert (await push(client, as_json(report(seq=2, udp=3))))[0] == 200
    assert (await push(client, as_json(report(seq=1, events=[created()]))))[1]["result"] == "late"
    older = report(seq=9, instance="old", started_at=1e9)
    assert (await push(client, as_json(older)))[1] == {"result": "old_instance", "seq": 9}
    text = await metrics(client)
    for result, count in (("accepted", 1), ("duplicate", 1), ("late", 1), ("old_instance", 1)):
        assert value(text, "turnscale_reports_total", result=result) == count
    assert value(text, "turnscale_report_events_total") == 1


def _mutate(change: Callable[[dict[str, Any]], None]) -> bytes:
    body = as_dict(report(udp=1, events=[created()]))
    change(body)
    return json.dumps(body).encode()


def _set(path: str, new: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = new

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.pop(key)


BAD_REPORTS = [
    pytest.param(b"{not json", "malformed JSON", id="malformed-json"),
    pytest.param(b"[]", "Expected `object`", id="not-an-object"),
    pytest.param(_mutate(_set("version", 2)), "unsupported version 2", id="unknown-version"),
    pytest.param(_mutate(_drop("relay")), "`relay`", id="missing-relay"),
    pytest.param(_mutate(_drop("state")), "`state`", id="missing-state"),
    pytest.param(_mutate(_set("seq", "17")), "`seq`", id="seq-wrong-type"),
    pytest.param(_mutate(_set("seq", 0)), "`seq`", id="seq-zero"),
    pytest.param(_mutate(_set("seq", 2**60)), "`seq`", id="seq-absurd"),
    pytest.param(_mutate(_set("state.allocations", {"udp": -1})), "state.allocations", id="neg"),
    pytest.param(
        _mutate(_set("state.allocations", {"udp": 10**9})), "state.allocations", id="absurd-gauge"
    ),
    pytest.param(
        _mutate(_set("state.bytes_sent_total", {"client": 2**64})),
        "state.bytes_sent_total",
        id="absurd-counter",
    ),
    pytest.param(
        _mutate(_set("state.allocations", {"UDP over IP!": 1})),
        "state.allocations",
        id="bad-transport-name",
    ),
    pytest.param(
        _mutate(_set("state.allocations", {f"t{n}": 1 for n in range(9)})),
        "state.allocations",
        id="too-many-transports",
    ),
    pytest.param(
        _mutate(_set("state.bytes_sent_total", {"server": 1})), "bytes_sent_total", id="bad-side"
    ),
    pytest.param(_mutate(_set("relay.pod", "Relay_A")), "relay.pod", id="pod-not-a-k8s-name"),
    pytest.param(_mutate(_set("relay.pod", "a" * 254)), "relay.pod", id="pod-too-long"),
    pytest.param(
        _mutate(_set("relay.namespace", "a.b")), "relay.namespace", id="namespace-not-a-label"
    ),
    pytest.param(_mutate(_set("relay.gateway", "")), "relay.gateway", id="empty-gateway"),
    pytest.param(_mutate(_set("relay.instance", "x y")), "relay.instance", id="bad-instance"),
    pytest.param(_mutate(_set("relay.started_at", 1e12)), "relay.started_at", id="future-start"),
    pytest.param(_mutate(_set("sent_at", -5)), "sent_at", id="negative-time"),
    pytest.param(_mutate(_set("draining", "yes")), "draining", id="draining-not-bool"),
    pytest.param(_mutate(_set("events.0.type", "boom")), "events[0].type", id="bad-event"),
    pytest.param(
        _mutate(
            _set("events", [as_dict(report(events=[deleted()]))["events"][0] | {"reason": "x"}])
        ),
        "events[0].reason",
        id="bad-reason",
    ),
    pytest.param(
        _mutate(_set("events", [{"type": "allocation_created"}])), "`at`", id="event-missing-field"
    ),
    pytest.param(
        _mutate(
            _set(
                "events",
                [as_dict(report(events=[created()]))["events"][0]] * (wire.MAX_EVENTS + 1),
            )
        ),
        "events",
        id="too-many-events",
    ),
]


@pytest.mark.parametrize(("body", "names"), BAD_REPORTS)
async def test_bad_reports_are_rejected_whole_naming_the_problem(
    make_client: Any, body: bytes, names: str
) -> None:
    client, scaler = await make_client()
    await push(client, as_json(report(seq=1, udp=5)))
    before = await metrics(client)
    status, answer = await push(client, body)
    assert status == 400
    assert names in answer["error"]
    after = await metrics(client)
    assert value(after, "turnscale_reports_total", result="invalid") == 1
    assert value(after, "stunner_allocations_active", **LABELS, transport="udp") == 5
    assert value(after, "stunner_allocations_created_total", **LABELS, transport="udp") == 0

    # Nothing in the fleet's series moved (the collector's own counters and its
    # process's CPU and memory may).
    def fleet_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("stunner_")]

    assert fleet_lines(before) == fleet_lines(after)
    relay = scaler.service.fleet.get("stunner", "relay-a")
    assert relay is not None
    assert relay.seq == 1


async def test_totals_going_down_within_an_instance_is_a_400(make_client: Any) -> None:
    client, _ = await make_client()
    await push(client, as_json(report(seq=1, received={"client": 100})))
    status, answer = await push(client, as_json(report(seq=2, received={"client": 1})))
    assert status == 400
    assert "bytes_received_total.client" in answer["error"]


async def test_body_over_the_limit_is_413_with_and_without_content_length(
    make_client: Any,
) -> None:
    client, _ = await make_client()
    huge = b" " * (wire.MAX_BODY_BYTES + 1)
    status, answer = await push(client, huge)
    assert status == 413
    assert "limit" in answer["error"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield b" " * 65536

    response = await client.post("/v1/reports", data=chunks(), headers=JSON)
    assert response.status == 413
    text = await metrics(client)
    assert value(text, "turnscale_reports_total", result="too_large") == 2
    assert value(text, "turnscale_relays_tracked") == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(make_client: Any, content_type: str | None) -> None:
    client, _ = await make_client()
    headers = {"Content-Type": content_type} if content_type else {}
    status, answer = await push(client, as_json(report(udp=1)), headers)
    assert status == 415
    assert "application/json" in answer["error"]
    assert value(await metrics(client), "turnscale_relays_tracked") == 0


async def test_json_with_charset_is_accepted(make_client: Any) -> None:
    client, _ = await make_client()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert (await push(client, as_json(report(udp=1)), headers))[0] == 202


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic c2VjcmV0", "Bearer", "bearer secret-x"]
)
async def test_bad_or_missing_token_is_401(make_client: Any, authorization: str | None) -> None:
    client, _ = await make_client(token="secret")
    headers = dict(JSON)
    if authorization:
        headers["Authorization"] = authorization
    response = await client.post("/v1/reports", data=as_json(report(udp=1)), headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    text = await metrics(client)
    assert value(text, "turnscale_reports_total", result="unauthorized") == 1
    assert value(text, "turnscale_relays_tracked") == 0


async def test_right_token_is_accepted(make_client: Any) -> None:
    client, _ = await make_client(token="secret")
    headers = {**JSON, "Authorization": "Bearer secret"}
    assert (await push(client, as_json(report(udp=1)), headers))[0] == 202


async def test_relays_beyond_max_relays_are_503(make_client: Any) -> None:
    client, _ = await make_client(max_relays=2)
    for pod in ("relay-a", "relay-b"):
        assert (await push(client, as_json(report(pod, udp=1))))[0] == 202
    status, answer = await push(client, as_json(report("relay-c", udp=1)))
    assert status == 503
    assert "--max-relays" in answer["error"]
    assert (await push(client, as_json(report("relay-a", seq=2, udp=4))))[0] == 202
    text = await metrics(client)
    assert value(text, "turnscale_reports_total", result="fleet_full") == 1
    assert value(text, "turnscale_relays_tracked") == 2


@pytest.mark.parametrize(
    ("allocations", "desired"), [(0, 2), (250, 3), (450, 5), (1000, 10), (5000, 10)]
)
async def test_scale_endpoint_follows_the_rule(
    make_client: Any, allocations: int, desired: int
) -> None:
    client, _ = await make_client()
    # Spread over relays, with a draining relay that must not count.
    await push(client, as_json(report("relay-a", udp=allocations // 2)))
    await push(client, as_json(report("relay-b", udp=allocations - allocations // 2)))
    await push(client, as_json(report("relay-c", udp=777, draining=True)))
    response = await client.get("/v1/scale", params={"gateway": "stunner-gateway"})
    assert response.status == 200
    assert await response.json() == {
        "gateway": "stunner-gateway",
        "namespace": None,
        "allocations": allocations,
        "desiredReplicas": desired,
        "minReplicas": 2,
        "maxReplicas": 10,
        "targetPerReplica": 100,
        "relays": 2,
        "active": allocations > 0,
    }
    text = await metrics(client)
    labels = {"namespace": "stunner", "gateway": "stunner-gateway"}
    assert value(text, "stunner_scaler_allocations", **labels) == allocations
    assert value(text, "stunner_scaler_desired_replicas", **labels) == desired


async def test_scale_without_gateway_is_the_whole_fleet(make_client: Any) -> None:
    client, _ = await make_client()
    await push(client, as_json(report("relay-a", gateway="gw-1", udp=120)))
    await push(client, as_json(report("relay-b", gateway="gw-2", udp=130)))
    whole = await (await client.get("/v1/scale")).json()
    assert (whole["allocations"], whole["desiredReplicas"], whole["relays"]) == (250, 3, 2)
    one = await (await client.get("/v1/scale?gateway=gw-2")).json()
    assert (one["allocations"], one["desiredReplicas"]) == (130, 2)
    unknown = await (await client.get("/v1/scale?gateway=nobody")).json()
    assert (unknown["allocations"], unknown["desiredReplicas"], unknown["active"]) == (0, 2, False)


async def test_metrics_follow_instances_staleness_and_expiry(
    make_client: Any, clock: FakeClock
) -> None:
    client, scaler = await make_client()
    await push(client, as_json(report(seq=3, udp=4, connections={"udp": 10}, sent={"peer": 50})))
    text = await metrics(client)
    assert value(text, "stunner_relay_up", **LABELS) == 1
    assert value(text, "stunner_bytes_sent_total", **LABELS, side="peer") == 50

    restart = report(seq=1, instance="two", started_at=T0 + 100, udp=1, sent={"peer": 5})
    await push(client, as_json(restart))
    text = await metrics(client)
    assert value(text, "stunner_bytes_sent_total", **LABELS, side="peer") == 55
    assert value(text, "stunner_connections_total", **LABELS, transport="udp") == 10

    clock.now += 16
    text = await metrics(client)
    assert value(text, "stunner_relay_up", **LABELS) == 0
    assert value(text, "stunner_relay_report_age_seconds", **LABELS) == 16
    assert value(text, "stunner_allocations_active", **LABELS, transport="udp") == 1

    clock.now += 45
    scaler.sweeper.sweep()
    text = await metrics(client)
    assert value(text, "stunner_relay_up", **LABELS) is None
    assert (
        value(text, "stunner_scaler_allocations", namespace="stunner", gateway="stunner-gateway")
        == 0
    )


async def test_lifecycle_events_reach_the_metrics(make_client: Any) -> None:
    client, _ = await make_client()
    events: list[wire.Event] = [created("a"), deleted("a", reason="expired", duration=3.0)]
    await push(client, as_json(report(events=events)))
    text = await metrics(client)
    assert value(text, "stunner_allocations_created_total", **LABELS, transport="udp") == 1
    deleted_labels = {**LABELS, "transport": "udp", "reason": "expired"}
    assert value(text, "stunner_allocations_deleted_total", **deleted_labels) == 1
    histogram = {"namespace": "stunner", "gateway": "stunner-gateway", "transport": "udp"}
    assert value(text, "stunner_allocation_duration_seconds_bucket", **histogram, le="1.0") == 0
    assert value(text, "stunner_allocation_duration_seconds_bucket", **histogram, le="5.0") == 1
    assert value(text, "stunner_allocation_duration_seconds_count", **histogram) == 1
    assert value(text, "stunner_allocation_duration_seconds_sum", **histogram) == 3.0


async def test_a_transport_this_scaler_does_not_know_is_counted_under_its_name(
    make_client: Any,
) -> None:
    """A newer relay's transport is an additive change to version 1: accepted, exported
    under its own name and summed for scaling, never a reason to reject the report."""
    client, _ = await make_client()
    body = as_dict(report(udp=2, events=[created("q1")]))
    body["state"]["allocations"]["quic"] = 3
    body["state"]["connections_total"]["quic"] = 4
    body["events"][0]["transport"] = "quic"
    status, _ = await push(client, json.dumps(body).encode())
    assert status == 202
    text = await metrics(client)
    assert value(text, "stunner_allocations_active", **LABELS, transport="quic") == 3
    assert value(text, "stunner_allocations_active", **LABELS, transport="udp") == 2
    assert value(text, "stunner_connections_total", **LABELS, transport="quic") == 4
    assert value(text, "stunner_allocations_created_total", **LABELS, transport="quic") == 1
    scale = await (await client.get("/v1/scale")).json()
    assert scale["allocations"] == 5


async def test_events_of_more_transports_than_the_bound_are_not_counted(
    make_client: Any,
) -> None:
    client, scaler = await make_client()
    events: list[wire.Event] = [created(f"a{n}") for n in range(10)]
    body = as_dict(report(events=events))
    for n, event in enumerate(body["events"]):
        event["transport"] = f"t{n}"
    status, _ = await push(client, json.dumps(body).encode())
    assert status == 202
    text = await metrics(client)
    counted = [n for n in range(10) if f'transport="t{n}"' in text]
    assert counted == list(range(wire.MAX_TRANSPORTS))
    assert scaler.service.fleet.events_over_transports == 10 - wire.MAX_TRANSPORTS


async def test_openmetrics_when_asked(make_client: Any) -> None:
    client, _ = await make_client()
    await push(client, as_json(report(udp=1)))
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    body = await response.text()
    assert body.endswith("# EOF\n")
    plain = await client.get("/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain")


async def test_process_metrics_for_the_scaler_itself(make_client: Any) -> None:
    client, _ = await make_client()
    text = await metrics(client)
    resident = value(text, "process_resident_memory_bytes")
    assert resident is not None and resident > 0
    assert value(text, "process_cpu_seconds_total") is not None


async def test_health_and_readiness(make_client: Any) -> None:
    client, scaler = await make_client()
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert (ready.status, (await ready.json())["ready"]) == (200, True)
    scaler.readiness["http"].ok = False
    not_ready = await client.get("/readyz")
    assert not_ready.status == 503
    assert await not_ready.json() == {"ready": False, "checks": {"http": False, "grpc": True}}
