"""The relay's own endpoints are never a peer (RFC 8656 §17), found by an attack round.

With ``--allow-peer 127.0.0.0/8`` (or ``--allow-loopback-peers``) a client could name the
relay's own listener as its peer and nest an allocation inside its allocation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay.core.peer_policy import SelfEndpoints, parse_peer_rule
from relay.net.server import RelayServer
from tests.relay.servers import PASSWORD, USER, address, relay_config, running
from tests.relay.turn_client import TurnClient, TurnError, echo_peer


def client(server: RelayServer, transport: str = "udp", **kwargs: Any) -> TurnClient:
    return TurnClient(
        address(server, transport), transport=transport, username=USER, password=PASSWORD, **kwargs
    )


def own_endpoints(server: RelayServer) -> list[tuple[str, int]]:
    own = [(item.address.host, item.address.port) for item in server.listeners]
    assert server.health_address is not None
    return [*own, (server.health_address.host, server.health_address.port)]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_own_listener_is_403_and_a_loopback_echo_peer_is_not(transport: str) -> None:
    config = relay_config(allow_loopback_peers=False, allow_peers=(parse_peer_rule("127.0.0.0/8"),))
    async with (
        running(config) as server,
        echo_peer() as (peer, protocol),
        client(server, transport) as c,
    ):
        await c.allocate()
        for own in own_endpoints(server):
            with pytest.raises(TurnError) as error:
                await c.create_permission(own)
            assert error.value.code == 403, own
            with pytest.raises(TurnError) as error:
                await c.channel_bind(0x4000, own)
            assert error.value.code == 403, own
        # A permission for the host (another port) does not open the listener to Send.
        await c.create_permission(peer)
        udp = address(server, "udp")
        c.send_indication(udp, b"nested allocate")
        c.send_indication(peer, b"hello")
        assert await c.receive() == (peer, b"hello")
        await c.channel_bind(0x4001, peer)
        c.send_channel(0x4001, b"chan")
        assert await c.receive() == (0x4001, b"chan")
        await asyncio.sleep(0.1)
        assert [data for data, _ in protocol.received] == [b"hello", b"chan"]
        assert server.stats.peer_tx == len(b"hello") + len(b"chan")  # nothing to the listener


def test_wildcard_listener_covers_the_relay_address_and_loopback() -> None:
    own = SelfEndpoints([("0.0.0.0", 3478), ("::", 3478), ("10.0.0.5", 8086)], "10.0.0.5")
    for ip in ("0.0.0.0", "10.0.0.5", "127.0.0.1", "127.1.2.3", "::ffff:10.0.0.5", "::1", "::"):
        assert own.covers(ip, 3478), ip
    assert own.covers("10.0.0.5", 8086)
    assert not own.covers("10.0.0.5", 3479)
    assert not own.covers("10.0.0.6", 3478)
    assert not own.covers("not an ip", 3478)
    assert not SelfEndpoints().covers("127.0.0.1", 3478)
