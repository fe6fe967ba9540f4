"""The relay in-process on loopback, driven by a TURN client built on the relay's codec."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp
import pytest

from relay.config import Listen, parse_listen
from relay.core.auth import rest_credentials
from relay.core.peer_policy import parse_peer_rule
from relay.net.server import RelayServer, StartupError
from relay.proto import stun, turn
from scaler import wire
from tests.clock import FakeClock
from tests.relay.servers import (
    PASSWORD,
    RECORDED,
    SECRET,
    USER,
    address,
    free_port_pair,
    relay_config,
    report_of,
    running,
    until,
)
from tests.relay.test_peer_policy import DENIED
from tests.relay.turn_client import TurnClient, TurnError, echo_peer

TRANSPORTS = ["udp", "tcp"]


def client(server: RelayServer, transport: str = "udp", **kwargs: Any) -> TurnClient:
    kwargs.setdefault("username", USER)
    kwargs.setdefault("password", PASSWORD)
    return TurnClient(address(server, transport), transport=transport, **kwargs)


def events(server: RelayServer, kind: type[Any]) -> list[Any]:
    return [event for event in RECORDED[id(server)] if isinstance(event, kind)]


# --- STUN and the data path --------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_binding(transport: str) -> None:
    async with running(relay_config()) as server, client(server, transport) as c:
        mapped = await c.binding()
        assert mapped == c.local


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_send_indication_and_data_indication(transport: str) -> None:
    async with (
        running(relay_config()) as server,
        echo_peer() as (peer, protocol),
        client(server, transport) as c,
    ):
        relayed = await c.allocate()
        assert relayed[0] == "127.0.0.1"
        await c.create_permission(peer)
        for payload in (b"ping", b"odd", b"1"):
            c.send_indication(peer, payload)
            assert await c.receive() == (peer, payload)
        assert protocol.received[0] == (b"ping", relayed)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_channel_data_both_ways(transport: str) -> None:
    async with (
        running(relay_config()) as server,
        echo_peer() as (peer, _),
        client(server, transport) as c,
    ):
        await c.allocate()
        await c.channel_bind(0x4001, peer)
        for payload in (b"x" * 5, b"y" * 200, b"2"):
            c.send_channel(0x4001, payload)
            assert await c.receive() == (0x4001, payload)


async def test_peer_without_permission_is_not_relayed() -> None:
    async with (
        running(relay_config()) as server,
        echo_peer() as (peer, _),
        client(server) as c,
    ):
        relayed = await c.allocate()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            stranger.sendto(b"unsolicited", relayed)
        await c.create_permission(peer)
        c.send_indication(peer, b"after")
        assert await c.receive() == (peer, b"after")
        assert c.data.empty()
        assert server.stats.peer_rx >= len(b"unsolicited")


async def test_client_to_client_through_two_allocations() -> None:
    async with running(relay_config()) as server, client(server) as a, client(server) as b:
        relayed_a = await a.allocate()
        relayed_b = await b.allocate()
        await a.channel_bind(0x4000, relayed_b)
        await b.create_permission(relayed_a)
        a.send_channel(0x4000, b"hello b")
        assert await b.receive() == (relayed_a, b"hello b")


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_password_is_401(transport: str) -> None:
    async with running(relay_config()) as server, client(server, transport, password="no") as c:
        with pytest.raises(TurnError) as error:
            await c.allocate()
        assert error.value.code == 401
        assert len(server.table) == 0


async def test_rest_credentials_and_their_expiry() -> None:
    fresh_user, fresh_password = rest_credentials(SECRET, "carol", time.time(), ttl=600)
    old_user, old_password = rest_credentials(SECRET, "dave", time.time() - 1200, ttl=600)
    async with running(relay_config()) as server:
        async with client(server, username=fresh_user, password=fresh_password) as c:
            await c.allocate()
        async with client(server, username=old_user, password=old_password) as c:
            with pytest.raises(TurnError) as error:
                await c.allocate()
            assert error.value.code == 401


# --- peer policy -------------------------------------------------------------------------------


async def _refusals(
    server: RelayServer, forms: list[str], family: int = stun.FAMILY_IPV4
) -> dict[str, object]:
    """CreatePermission and ChannelBind for each form; what did not get 403."""
    wrong: dict[str, object] = {}
    async with client(server) as c:
        await c.allocate(
            extra=[(turn.REQUESTED_ADDRESS_FAMILY, turn.encode_address_family(family))]
        )
        for index, host in enumerate(forms):
            for attempt in ("permission", "channel"):
                try:
                    if attempt == "permission":
                        await c.create_permission((host, 9))
                    else:
                        await c.channel_bind(0x4100 + index, (host, 9))
                    wrong[f"{attempt} {host}"] = 200
                except TurnError as error:
                    if error.code != 403:
                        wrong[f"{attempt} {host}"] = error.code
    return wrong


DENIED_FORMS = [form for form in DENIED if "%" not in form]


async def test_every_denied_peer_form_is_403_on_an_ipv4_relay() -> None:
    async with running(relay_config(allow_loopback_peers=False)) as server:
        assert await _refusals(server, DENIED_FORMS) == {}
        assert next(iter(server.table)).permissions == {}


async def test_every_denied_peer_form_is_403_on_an_ipv6_relay() -> None:
    config = relay_config(
        listen=(parse_listen("udp://[::1]:0"), parse_listen("tcp://[::1]:0")),
        relay_address="::1",
        allow_loopback_peers=False,
    )
    async with running(config) as server:
        assert await _refusals(server, DENIED_FORMS, stun.FAMILY_IPV6) == {}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_data_both_ways_on_an_ipv6_relay(transport: str) -> None:
    config = relay_config(
        listen=(parse_listen("udp://[::1]:0"), parse_listen("tcp://[::1]:0")),
        relay_address="::1",
    )
    async with (
        running(config) as server,
        echo_peer("::1") as (peer, _),
        echo_peer("::1") as (channel_peer, _),
        client(server, transport) as c,
    ):
        relayed = await c.allocate(
            extra=[(turn.REQUESTED_ADDRESS_FAMILY, turn.encode_address_family(stun.FAMILY_IPV6))]
        )
        assert relayed[0] == "::1"
        await c.create_permission(peer)
        for payload in (b"ping", b"odd", b"1"):  # Data indications, padded or not
            c.send_indication(peer, payload)
            assert await c.receive() == (peer, payload)
        await c.channel_bind(0x4001, channel_peer)
        for payload in (b"x" * 5, b"y" * 200):
            c.send_channel(0x4001, payload)
            assert await c.receive() == (0x4001, payload)


async def test_loopback_switch_opens_loopback_only() -> None:
    async with running(relay_config(allow_loopback_peers=True)) as server:
        still_denied = ["0.0.0.0", "169.254.169.254", "224.0.0.1", "255.255.255.255"]
        assert await _refusals(server, still_denied) == {}
        async with client(server) as c, echo_peer() as (peer, _):
            await c.allocate()
            await c.channel_bind(0x4000, peer)
            c.send_channel(0x4000, b"loopback")
            assert await c.receive() == (0x4000, b"loopback")


async def test_allowed_peer_is_reachable_and_others_are_not() -> None:
    async with echo_peer() as (peer, _):
        rule = parse_peer_rule(f"127.0.0.1:{peer[1]}")
        config = relay_config(allow_loopback_peers=False, allow_peers=(rule,))
        async with running(config) as server, client(server) as c:
            await c.allocate()
            await c.channel_bind(0x4000, peer)
            c.send_channel(0x4000, b"allowed")
            assert await c.receive() == (0x4000, b"allowed")
            for other in (("127.0.0.1", peer[1] + 1), ("10.1.2.3", peer[1])):
                with pytest.raises(TurnError) as error:
                    await c.channel_bind(0x4001, other)
                assert error.value.code == 403
            # Send indications to a port the rule does not allow are dropped.
            c.send_indication(("127.0.0.1", peer[1] + 1), b"dropped")
            c.send_indication(peer, b"sent")
            assert await c.receive() == (0x4000, b"sent")


# --- limits ------------------------------------------------------------------------------------


async def test_quotas_answer_486() -> None:
    async with (
        running(relay_config(user_quota=1, total_quota=2)) as server,
        client(server) as first,
        client(server) as second,
        client(server, "tcp", username="bob", password="builder") as third,
        client(server, username="bob", password="builder") as fourth,
    ):
        await first.allocate()
        with pytest.raises(TurnError) as error:
            await second.allocate()
        assert error.value.code == 486
        await third.allocate()
        with pytest.raises(TurnError) as error:
            await fourth.allocate()
        assert error.value.code == 486
        await first.refresh(0)
        await second.allocate()


async def test_port_exhaustion_is_508() -> None:
    low = free_port_pair()
    async with (
        running(relay_config(relay_ports=(low, low + 1))) as server,
        client(server) as a,
        client(server) as b,
        client(server) as c,
    ):
        ports = {(await a.allocate())[1], (await b.allocate())[1]}
        assert ports == {low, low + 1}
        with pytest.raises(TurnError) as error:
            await c.allocate()
        assert error.value.code == 508
        await a.refresh(0)
        assert (await c.allocate())[1] in ports


async def test_even_port_reservation_with_real_sockets() -> None:
    low = free_port_pair()
    async with (
        running(relay_config(relay_ports=(low, low + 1))) as server,
        client(server) as rtp,
        client(server) as rtcp,
        client(server) as third,
    ):
        even = turn.encode_even_port(True)
        relayed = await rtp.allocate(extra=[(turn.EVEN_PORT, even)])
        assert relayed[1] == low and rtp.token is not None
        with pytest.raises(TurnError) as error:
            await third.allocate()  # the odd port is reserved
        assert error.value.code == 508
        token = turn.encode_reservation_token(rtp.token)
        assert (await rtcp.allocate(extra=[(turn.RESERVATION_TOKEN, token)]))[1] == low + 1


async def test_short_lifetime_expires() -> None:
    clock = FakeClock()
    config = relay_config(max_lifetime=1)
    async with running(config, clock=clock, sweep_interval=0.05) as server, client(server) as c:
        await c.allocate()
        assert c.lifetime == 1
        clock.now += 1.0
        await until(lambda: len(server.table) == 0)
        deleted = events(server, wire.AllocationDeleted)
        assert [event.reason for event in deleted] == ["expired"]
        assert deleted[0].duration == 1.0
        with pytest.raises(TurnError) as error:
            await c.refresh()
        assert error.value.code == 437


async def test_refresh_keeps_a_short_lifetime_allocation() -> None:
    clock = FakeClock()
    config = relay_config(max_lifetime=1)
    async with running(config, clock=clock, sweep_interval=0.05) as server, client(server) as c:
        await c.allocate()
        for _ in range(3):
            clock.now += 0.9
            server.sweep()
            assert len(server.table) == 1
            assert await c.refresh() == 1
        clock.now += 1.0
        server.sweep()
        assert len(server.table) == 0


# --- drain, connections, garbage ---------------------------------------------------------------


async def test_drain_refuses_new_allocations_and_keeps_old_ones() -> None:
    async with (
        running(relay_config()) as server,
        echo_peer() as (peer, _),
        client(server) as old,
        client(server) as new,
        aiohttp.ClientSession() as http,
    ):
        await old.allocate()
        await old.channel_bind(0x4000, peer)
        server.begin_drain()
        health = f"http://{server.health_address}"
        # Still ready: kube-proxy would delete the calls' UDP conntrack entries otherwise.
        async with http.get(f"{health}/ready") as response:
            assert response.status == 200
            assert await response.json() == {"ready": True, "draining": True}
        async with http.get(f"{health}/status") as response:
            assert (await response.json())["draining"] is True
        with pytest.raises(TurnError) as error:
            await new.allocate()
        assert error.value.code == 403
        old.send_channel(0x4000, b"still relayed")
        assert await old.receive() == (0x4000, b"still relayed")
        await old.refresh()
        async with http.get(f"{health}/ready") as response:
            assert response.status == 200
        waiter = asyncio.ensure_future(server.wait_drained())
        await old.refresh(0)
        await asyncio.wait_for(waiter, 5)


async def test_unready_on_drain_turns_ready_to_503() -> None:
    async with (
        running(relay_config(unready_on_drain=True)) as server,
        client(server) as old,
        aiohttp.ClientSession() as http,
    ):
        await old.allocate()
        health = f"http://{server.health_address}"
        async with http.get(f"{health}/ready") as response:
            assert response.status == 200
        server.begin_drain()
        async with http.get(f"{health}/ready") as response:
            assert response.status == 503
            assert await response.json() == {"ready": False, "draining": True}
        assert await old.refresh() == 600


async def test_tcp_connection_close_deletes_its_allocation() -> None:
    async with running(relay_config()) as server:
        async with client(server, "tcp") as c:
            await c.allocate()
        await until(lambda: len(server.table) == 0)
        assert [e.reason for e in events(server, wire.AllocationDeleted)] == ["error"]


async def test_garbage_closes_tcp_and_is_dropped_on_udp() -> None:
    async with running(relay_config()) as server:
        async with client(server, "tcp") as tcp:
            tcp.send_raw(b"\xff" * 20)
            await asyncio.wait_for(tcp.closed.wait(), 5)
        async with client(server) as udp:
            udp.send_raw(b"\xff" * 20)
            udp.send_raw(stun.MessageBuilder(stun.BINDING, stun.MessageClass.REQUEST).encode()[:24])
            assert await udp.binding() == udp.local


async def test_idle_tcp_connection_is_closed() -> None:
    async with (
        running(relay_config(), sweep_interval=0.05, tcp_idle_timeout=0.2) as server,
        client(server, "tcp") as c,
    ):
        await asyncio.wait_for(c.closed.wait(), 5)
        assert not server.connections


# --- counters, events, health ------------------------------------------------------------------


async def test_counters_and_events_follow_the_traffic() -> None:
    async with running(relay_config()) as server, echo_peer() as (peer, _):
        async with client(server) as udp, client(server, "tcp") as tcp:
            for c in (udp, tcp):
                await c.allocate()
                await c.channel_bind(0x4000, peer)
                c.send_channel(0x4000, b"z" * 100)
                assert await c.receive() == (0x4000, b"z" * 100)
            state = server.stats.snapshot()
            assert state.allocations == {"udp": 1, "tcp": 1}
            assert state.connections_total == {"udp": 1, "tcp": 1}
            await udp.refresh(0)
        await until(lambda: len(server.table) == 0)
        state = server.stats.snapshot()
        assert state.allocations == {"udp": 0, "tcp": 0}
        assert state.bytes_received_total["peer"] == 200
        assert state.bytes_sent_total["peer"] == 200
        assert state.bytes_received_total["client"] > 200
        assert state.bytes_sent_total["client"] > 200
        created = events(server, wire.AllocationCreated)
        deleted = events(server, wire.AllocationDeleted)
        assert sorted(e.transport for e in created) == ["tcp", "udp"]
        assert sorted((e.transport, e.reason) for e in deleted) == [
            ("tcp", "error"),
            ("udp", "refresh_zero"),
        ]
        assert sum(e.bytes_received for e in deleted) == 200
        assert sum(e.bytes_sent for e in deleted) == 200
        report = report_of(state, [*created, *deleted])
        assert wire.decode(wire.encode(report)) == report  # the pusher can send them as-is


async def test_health_endpoints() -> None:
    async with running(relay_config()) as server, aiohttp.ClientSession() as http:
        base = f"http://{server.health_address}"
        async with http.get(f"{base}/live") as response:
            assert response.status == 200
        async with http.get(f"{base}/ready") as response:
            assert response.status == 200
            assert (await response.json())["ready"] is True
        async with client(server) as c:
            await c.allocate()
            async with http.get(f"{base}/status") as response:
                status = await response.json()
        assert status["allocations"] == {"udp": 1, "tcp": 0}
        assert status["draining"] is False
        assert status["uptime"] >= 0


async def test_startup_error_names_the_listener() -> None:
    async with running(relay_config()) as server:
        config = relay_config(listen=(Listen("udp", server.listeners[0].address),))
        with pytest.raises(StartupError, match="--listen udp://"):
            await RelayServer(config).start()
