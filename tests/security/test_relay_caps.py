"""Caps on what one client can make the relay hold (RFC 8656 §10.2, §12.2: 508 Insufficient
Capacity), found by an attack round: one CreatePermission could carry thousands of
XOR-PEER-ADDRESS attributes, and one allocation could hold unbounded permissions and channels.
"""

from __future__ import annotations

import pytest

from relay import settings
from relay.core.handler import MAX_CHANNELS, MAX_PEERS_PER_REQUEST, MAX_PERMISSIONS
from relay.proto import turn
from tests.relay.servers import PASSWORD, USER, address, relay_config, running
from tests.relay.test_handler import Client, code, make_handler
from tests.relay.turn_client import TurnClient, TurnError


def peer(n: int) -> tuple[str, int]:
    return (f"192.0.{2 + n // 250}.{1 + n % 250}", 5000)


def bind(client: Client, channel: int, address: tuple[str, int]) -> int:
    attrs = [(turn.CHANNEL_NUMBER, turn.encode_channel_number(channel))]
    return code(client.request(turn.CHANNEL_BIND, attrs, (address,)))


def test_peers_per_create_permission_are_capped_with_400() -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    client.allocate()
    too_many = tuple(peer(n) for n in range(MAX_PEERS_PER_REQUEST + 1))
    assert code(client.request(turn.CREATE_PERMISSION, peers=too_many)) == 400
    assert recorder.created[0].permissions == {}
    assert code(client.request(turn.CREATE_PERMISSION, peers=too_many[:-1])) == 200


def test_permissions_per_allocation_are_capped_with_508() -> None:
    handler, _, recorder = make_handler()
    handler.max_permissions = 20
    client = Client(handler)
    client.allocate()
    for n in range(0, 20, 4):
        peers = tuple(peer(n + i) for i in range(4))
        assert code(client.request(turn.CREATE_PERMISSION, peers=peers)) == 200
    assert code(client.request(turn.CREATE_PERMISSION, peers=(peer(20),))) == 508
    assert code(client.request(turn.CREATE_PERMISSION, peers=(peer(3), peer(21)))) == 508
    assert len(recorder.created[0].permissions) == 20
    assert code(client.request(turn.CREATE_PERMISSION, peers=(peer(3), peer(7)))) == 200  # refresh
    assert bind(client, 0x4000, peer(21)) == 508  # a new channel needs a new permission
    assert bind(client, 0x4000, peer(5)) == 200
    client.now += turn.PERMISSION_LIFETIME + 1  # all lapse, even before the sweep
    assert code(client.request(turn.CREATE_PERMISSION, peers=(peer(20),))) == 200


def test_channels_per_allocation_are_capped_with_508() -> None:
    handler, _, recorder = make_handler()
    handler.max_channels = 5
    client = Client(handler)
    client.allocate()
    for n in range(5):
        assert bind(client, 0x4000 + n, peer(n)) == 200
    assert bind(client, 0x4005, peer(5)) == 508
    assert bind(client, 0x4001, peer(1)) == 200  # a refresh
    assert len(recorder.created[0].channels) == 5
    client.now += turn.CHANNEL_LIFETIME + 1
    assert bind(client, 0x4005, peer(5)) == 200


def test_the_flags_and_their_defaults() -> None:
    relay = settings.load(["--user", "a:b"], {}).relay
    assert (relay.max_peers_per_request, relay.max_permissions, relay.max_channels) == (
        MAX_PEERS_PER_REQUEST,
        MAX_PERMISSIONS,
        MAX_CHANNELS,
    )
    flags = ["--max-peers-per-request", "2", "--max-permissions", "3", "--max-channels", "0"]
    relay = settings.load(["--user", "a:b", *flags], {}).relay
    assert (relay.max_peers_per_request, relay.max_permissions, relay.max_channels) == (2, 3, 0)


async def test_a_real_relay_applies_the_flags() -> None:
    async with (
        running(relay_config(max_permissions=2)) as server,
        TurnClient(address(server, "udp"), USER, PASSWORD) as c,
    ):
        await c.allocate()
        await c.create_permission(("127.0.0.1", 1000), ("127.0.0.2", 1000))
        with pytest.raises(TurnError) as error:
            await c.create_permission(("127.0.0.3", 1000))
        assert error.value.code == 508
