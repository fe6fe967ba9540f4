"""The fleet user quota on the relay: the scalers' lists, their lapse, the 486 and its count.

The over-quota view and the allocation table run with an injected clock; the Allocates
go through the real request handler (RFC 8656 §7.2: 486 Allocation Quota Reached); the
pusher talks to a real scaler (``ScalerServer`` with ``--fleet-user-quota``) and to
aiohttp apps answering what an old, a broken or a hostile scaler would.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Mapping

import msgspec
import pytest
from aiohttp import web

from relay.core.allocation import AllocationTable, quota_key
from relay.core.auth import rest_password
from relay.core.stats import RelayStats, reported_users
from relay.proto import turn
from relay.reporting.fleet_quota import FleetQuota
from relay.reporting.pusher import Identity, ReportPusher
from scaler import wire
from scaler.server import ScalerServer
from tests.clock import FakeClock
from tests.net import free_port
from tests.relay.test_handler import SECRET, Client, code, make_handler
from tests.scaler.helpers import scaler_config
from tests.waiting import eventually

ALICE = quota_key("alice", static=True)
BOB = quota_key("bob", static=True)


def listing(*keys: str, truncated: bool = False) -> wire.OverQuota:
    return wire.OverQuota(users=[wire.user_digest(key) for key in keys], truncated=truncated)


# ---- the scalers' lists ------------------------------------------------------------


def test_a_listed_user_is_refused_until_the_list_lapses() -> None:
    clock = FakeClock()
    view = FleetQuota(ttl=10.0, clock=clock)
    assert not view.refuses(ALICE)
    view.answered("http://10.0.0.1:8080/v1/reports", listing(ALICE))
    assert view.refuses(ALICE) and not view.refuses(BOB)
    clock.now += 9.9
    assert view.refuses(ALICE)
    clock.now += 0.1  # a scaler that stopped answering blocks nobody for good
    assert not view.refuses(ALICE)
    assert view.status() == {"users_over_quota": 0, "scalers": {}}


def test_an_answer_without_a_list_clears_that_scalers_list_at_once() -> None:
    clock = FakeClock()
    view = FleetQuota(ttl=10.0, clock=clock)
    view.answered("a", listing(ALICE))
    view.answered("a", None)  # an old scaler, the quota off, a body that did not decode
    assert not view.refuses(ALICE)
    view.answered("a", listing(ALICE))
    view.answered("a", listing())  # nobody over now
    assert not view.refuses(ALICE)


def test_several_scalers_block_while_any_live_one_lists_the_user() -> None:
    clock = FakeClock()
    view = FleetQuota(ttl=10.0, clock=clock)
    view.answered("a", listing(ALICE))
    clock.now += 5
    view.answered("b", listing(BOB, truncated=True))
    assert view.refuses(ALICE) and view.refuses(BOB)
    status = view.status()
    assert status["users_over_quota"] == 2
    assert status["scalers"] == {
        "a": {"users_over_quota": 1, "truncated": False, "expires_in": 5.0},
        "b": {"users_over_quota": 1, "truncated": True, "expires_in": 10.0},
    }
    clock.now += 5  # a lapsed, b still live
    assert not view.refuses(ALICE) and view.refuses(BOB)
    view.forget("b")  # its address went away
    assert not view.refuses(BOB)
    with pytest.raises(ValueError, match="positive"):
        FleetQuota(ttl=0)


# ---- the allocation table and the handler -------------------------------------------


def test_refusals_are_counted_by_reason_local_quotas_first() -> None:
    listed: set[str] = set()
    table = AllocationTable(user_quota=1, total_quota=3)
    table.fleet_refuses = listed.__contains__
    assert table.quota_refusal(ALICE) is None
    listed.add(ALICE)
    assert table.quota_exceeded(ALICE)
    assert table.refused == {"user_quota": 0, "total_quota": 0, "fleet_user_quota": 1}
    assert table.quota_refusal(ALICE, units=2) == "user_quota"  # the relay's own, at once
    assert table.quota_refusal(BOB, units=4) == "total_quota"
    assert not table.quota_exceeded(BOB)


def test_a_listed_user_gets_486_everywhere_existing_allocations_keep_refreshing() -> None:
    listed: set[str] = set()
    handler, _, _ = make_handler(table=AllocationTable())
    handler.table.fleet_refuses = listed.__contains__
    first = Client(handler, client=("198.51.100.7", 40001))
    assert code(first.allocate()) == 200
    listed.add(ALICE)
    # A new 5-tuple of the same user, on a relay that holds only one of its allocations.
    assert code(Client(handler, client=("198.51.100.7", 40002)).allocate()) == 486
    assert handler.table.refused["fleet_user_quota"] == 1
    # The relay's stats hand the table their dict: reports carry what was refused.
    stats = RelayStats()
    counted = AllocationTable(refused=stats.refused)
    counted.fleet_refuses = listed.__contains__
    assert counted.quota_exceeded(ALICE)
    assert stats.snapshot().refused_total == {"fleet_user_quota": 1}
    # Other users are not affected.
    bob = Client(handler, "bob", "builder", client=("198.51.100.7", 40003))
    assert code(bob.allocate()) == 200
    # The existing allocation is never cut: it refreshes, and permissions still work.
    refresh = first.request(turn.REFRESH, [(turn.LIFETIME, turn.encode_lifetime(600))])
    assert code(refresh) == 200
    assert code(first.request(turn.CREATE_PERMISSION, peers=(("192.0.2.10", 5000),))) == 200
    listed.clear()  # the scalers stop listing alice
    assert code(Client(handler, client=("198.51.100.7", 40004)).allocate()) == 200
    assert len(handler.table) == 3


def test_rest_users_are_refused_by_user_id_whatever_the_credential() -> None:
    listed = {"rest:carol"}
    handler, _, _ = make_handler(table=AllocationTable())
    handler.table.fleet_refuses = listed.__contains__
    answers = []
    for n, user in enumerate(("carol", "carol", "dave")):
        username = f"{int(time.time()) + 600 + n}:{user}"
        client = Client(
            handler, username, rest_password(SECRET, username), client=("198.51.100.8", 41000 + n)
        )
        answers.append(code(client.allocate()))
    assert answers == [486, 486, 200]


# ---- what reports carry ------------------------------------------------------------


def test_reports_carry_per_user_digests_capped_at_the_users_with_most() -> None:
    per_user = {f"rest:u{n}": n for n in range(1, 8)}
    users = reported_users(per_user, limit=3)
    assert users == {wire.user_digest(f"rest:u{n}"): n for n in (5, 6, 7)}
    assert reported_users({}) == {}
    stats = RelayStats()
    assert "users" not in msgspec.json.decode(msgspec.json.encode(stats.snapshot()))
    table = AllocationTable()
    stats.per_user = table.users
    handler, _, _ = make_handler(table=table)
    assert code(Client(handler, client=("198.51.100.9", 42000)).allocate()) == 200
    assert wire.users_of(stats.snapshot().users) == {wire.user_digest(ALICE): 1}


# ---- the pusher and the answers --------------------------------------------------------


class PerUser:
    """The relay side: a state with per-user counts it can change."""

    def __init__(self) -> None:
        self.per_user: dict[str, int] = {}
        self.draining = False

    def snapshot(self) -> wire.RelayState:
        return wire.RelayState(
            allocations={"udp": sum(self.per_user.values())},
            connections_total={"udp": 0},
            bytes_received_total={"client": 0, "peer": 0},
            bytes_sent_total={"client": 0, "peer": 0},
            users=wire.users_field(reported_users(self.per_user)),
        )


@pytest.fixture
async def quota_scaler() -> AsyncIterator[ScalerServer]:
    config = dataclasses.replace(scaler_config(), fleet_user_quota=3)
    server = ScalerServer(config)
    await server.start()
    yield server
    await server.stop()


async def test_the_pusher_follows_a_real_scalers_list(quota_scaler: ScalerServer) -> None:
    url = f"http://{quota_scaler.http_address}"
    relays = [PerUser(), PerUser(), PerUser()]  # the third never holds one of alice's
    pushers = [
        ReportPusher(
            [url], Identity(pod=f"relay-{n}", namespace="stunner", gateway="g"), relay, interval=0.5
        )
        for n, relay in enumerate(relays)
    ]
    for pusher in pushers:
        await pusher.start()
    try:
        relays[0].per_user[ALICE] = 2
        pushers[0].changed()
        await eventually(
            lambda: (
                quota_scaler.user_quota is not None
                and quota_scaler.user_quota.total(wire.user_digest(ALICE)) == 2
            )
        )
        relays[1].per_user[ALICE] = 1
        pushers[1].changed()
        # The relay holding one of alice's three learns it too, with its next answer, and
        # so does the relay holding none.
        await eventually(lambda: all(p.fleet_quota.refuses(ALICE) for p in pushers), "listed")
        assert not pushers[1].fleet_quota.refuses(BOB)
        assert pushers[1].status()["fleet_quota"]["users_over_quota"] == 1  # type: ignore[index]
        relays[0].per_user[ALICE] = 1
        pushers[0].changed()
        await eventually(lambda: not any(p.fleet_quota.refuses(ALICE) for p in pushers), "freed")
    finally:
        for pusher in pushers:
            await pusher.close()


@pytest.fixture
async def answering() -> AsyncIterator[tuple[str, list[web.Response]]]:
    """A scaler stand-in answering each report with the next queued response (202 {})."""
    queued: list[web.Response] = []
    posts: list[bytes] = []

    async def reports(request: web.Request) -> web.StreamResponse:
        posts.append(await request.read())
        return queued.pop(0) if queued else web.json_response({}, status=202)

    app = web.Application()
    app.router.add_post("/v1/reports", reports)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", queued
    await runner.cleanup()


def over(*keys: str) -> Mapping[str, object]:
    return {"result": "accepted", "over_quota": msgspec.to_builtins(listing(*keys))}


async def test_unknown_bad_and_oversized_answers_list_nobody_and_pushing_goes_on(
    answering: tuple[str, list[web.Response]],
) -> None:
    url, queued = answering
    relay = PerUser()
    pusher = ReportPusher(
        [url], Identity(pod="relay-a", namespace="s", gateway="g"), relay, interval=0.3
    )
    await pusher.start()
    try:

        def sent() -> int:
            scalers = pusher.status()["scalers"]
            assert isinstance(scalers, dict)
            count: int = scalers[f"{url}/v1/reports"]["reports_sent"]
            return count

        await eventually(lambda: sent() >= 1)
        queued.append(web.json_response(over(ALICE), status=202))
        await eventually(lambda: pusher.fleet_quota.refuses(ALICE), "listed")
        # A 200 (a duplicate) says nothing about the list: it stays.
        queued.append(web.json_response({"result": "duplicate", "over_quota": None}, status=200))
        count = sent()
        await eventually(lambda: sent() > count)
        assert pusher.fleet_quota.refuses(ALICE)
        # Bodies a relay does not understand: accepted reports, nobody listed, no failure.
        for body in (b"not json", b'{"later": [1, 2, 3]}', b'{"over_quota": {"version": 7}}'):
            queued.append(web.json_response(over(ALICE), status=202))
            await eventually(lambda: pusher.fleet_quota.refuses(ALICE))
            queued.append(web.Response(body=body, status=202, content_type="application/json"))
            await eventually(lambda: not pusher.fleet_quota.refuses(ALICE), f"cleared by {body!r}")
        # An answer over the read limit is not read whole, nor decoded.
        queued.append(web.json_response(over(ALICE), status=202))
        await eventually(lambda: pusher.fleet_quota.refuses(ALICE))
        huge = msgspec.json.encode({**over(ALICE), "pad": "x" * (wire.MAX_ANSWER_BYTES + 1)})
        queued.append(web.Response(body=huge, status=202, content_type="application/json"))
        await eventually(lambda: not pusher.fleet_quota.refuses(ALICE), "cleared by a huge body")
        status = pusher.status()["scalers"][f"{url}/v1/reports"]  # type: ignore[index]
        assert status["failing"] == 0 and status["reports_rejected"] == 0
    finally:
        await pusher.close()


async def test_a_scaler_that_goes_away_stops_blocking_within_two_intervals(
    answering: tuple[str, list[web.Response]],
) -> None:
    url, queued = answering
    pusher = ReportPusher(
        [url], Identity(pod="relay-a", namespace="s", gateway="g"), PerUser(), interval=0.2
    )
    await pusher.start()
    try:
        queued.append(web.json_response(over(ALICE), status=202))
        await eventually(lambda: pusher.fleet_quota.refuses(ALICE), "listed")
        # Every later answer is a 503 (a scaler shutting down): no new list comes, and the
        # old one lapses (its exact lifetime is tested with a hand-moved clock above).
        queued.extend(web.Response(status=503) for _ in range(200))
        await eventually(lambda: not pusher.fleet_quota.refuses(ALICE), "lapsed", within=5)
        assert pusher.status()["scalers"][f"{url}/v1/reports"]["failing"] > 0  # type: ignore[index]
    finally:
        await pusher.close()
