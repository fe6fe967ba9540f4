"""The NAT topology itself and the relay at its edge, seen by a TURN client behind the NAT.

The TURN client is the suite's own (tests/relay/turn_client.py), run on an event loop inside
the client namespace; the echo peer is a socket of the media namespace. What a browser does
across the same network is in test_browser_nat.py, ``turnscale load`` in test_load_nat.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import subprocess

import pytest

from tests import netns
from tests.network.stack import Stack, media_echo
from tests.relay.servers import PASSWORD, USER
from tests.relay.turn_client import TurnClient, TurnError
from tests.tools import require_root
from tests.waiting import eventually

Address = tuple[str, int]
#: <linux/in.h>; the socket module does not name it.
IP_RECVERR = 11


async def test_relay_maps_the_client_to_the_nat_and_relays_from_the_cluster(
    relay: Stack,
) -> None:
    """XOR-MAPPED-ADDRESS is the NAT's public address (RFC 8489 §14.2: the reflexive address
    the server sees), XOR-RELAYED-ADDRESS the relay's cluster-side address (RFC 8656 §18.5),
    and data sent through a channel comes back from the media peer (RFC 8656 §12)."""
    async with media_echo(relay.topology) as (media, echo):

        async def behind_the_nat() -> tuple[Address, Address, Address, Address, bytes]:
            async with TurnClient(relay.turn, USER, PASSWORD) as client:
                reflexive = await client.binding()
                relayed = await client.allocate()
                assert client.mapped is not None
                await client.channel_bind(0x4000, media)
                client.send_channel(0x4000, b"through the NAT")
                channel, echoed = await client.receive()
                assert channel == 0x4000
                return client.local, reflexive, client.mapped, relayed, echoed

        local, reflexive, mapped, relayed, echoed = await relay.topology.client.run_async(
            behind_the_nat
        )
    assert local[0] == netns.CLIENT
    assert reflexive[0] == netns.NAT_PUBLIC
    assert mapped == reflexive  # one NAT mapping per client socket
    assert relayed[0] == netns.RELAY_CLUSTER
    assert echoed == b"through the NAT"
    # The media server saw the relayed address, never the client's or the NAT's.
    assert [source for _, source in echo.received] == [relayed]


@pytest.mark.parametrize(
    "outside",
    [netns.NAT_PUBLIC, netns.RELAY_PUBLIC, netns.CLIENT, "127.0.0.1"],
    # The relay namespace's loopback is where its scaler and health endpoint listen.
    ids=["nat-public", "relay-public", "client-lan", "relay-loopback"],
)
async def test_peer_policy_refuses_peers_outside_the_media_range(
    relay: Stack, outside: str
) -> None:
    """``--allow-peer 198.19.0.0/24``: CreatePermission and ChannelBind to any other address
    get 403 (RFC 8656 §10.2, §12.2), while the media server stays reachable."""

    async def behind_the_nat() -> tuple[int, int]:
        async with TurnClient(relay.turn, USER, PASSWORD) as client:
            await client.allocate()
            with pytest.raises(TurnError) as permission:
                await client.create_permission((outside, 9))
            with pytest.raises(TurnError) as channel:
                await client.channel_bind(0x4001, (outside, 9))
            await client.create_permission((netns.MEDIA, 9))  # the media range: allowed
            return permission.value.code, channel.value.code

    assert await relay.topology.client.run_async(behind_the_nat) == (403, 403)


async def test_nat_drops_unsolicited_inbound_and_passes_replies(
    topology: netns.NatTopology,
) -> None:
    """The NAT forwards only what answers a flow the client opened (RFC 4787 §5: address-
    and-port-dependent filtering): a packet from the public side to the client's LAN address,
    or from another port to the client's mapping, is dropped and counted."""
    client = topology.client.socket()
    client.bind((netns.CLIENT, 0))
    server = topology.relay.socket()
    server.bind((netns.RELAY_PUBLIC, 0))
    other = topology.relay.socket()
    other.bind((netns.RELAY_PUBLIC, 0))
    loop = asyncio.get_running_loop()
    # An attacker on the public side who knows the LAN: a route to it through the NAT.
    topology.relay.ip("route", "add", netns.CLIENT_LAN, "via", netns.NAT_PUBLIC)
    try:
        before = topology.unsolicited_drops()
        other.sendto(b"unsolicited", client.getsockname())
        await eventually(
            lambda: topology.unsolicited_drops() == before + 1, "the NAT dropped the packet"
        )

        await loop.sock_sendto(client, b"hello", server.getsockname())
        async with asyncio.timeout(5):
            data, mapping = await loop.sock_recvfrom(server, 100)
        assert (data, mapping[0]) == (b"hello", netns.NAT_PUBLIC)
        await loop.sock_sendto(server, b"reply", mapping)
        async with asyncio.timeout(5):
            assert await loop.sock_recvfrom(client, 100) == (b"reply", server.getsockname())

        # The mapping exists now, but only for the server's address and port.
        other.sendto(b"not the server", mapping)
        await eventually(
            lambda: topology.unsolicited_drops() == before + 2, "the NAT dropped the packet"
        )
        with pytest.raises(BlockingIOError):
            client.recvfrom(100)  # nothing but the reply ever arrived
    finally:
        topology.relay.ip("route", "del", netns.CLIENT_LAN)
        for sock in (client, server, other):
            sock.close()


async def test_no_direct_path_between_the_client_lan_and_the_media_server(
    topology: netns.NatTopology,
) -> None:
    """The media server has no route to the client LAN, the NAT none to the cluster, and the
    relay does not forward: only the relay's own sockets cross from one side to the other."""
    client = topology.client.socket()
    with client:
        # Network unreachable is a soft error (RFC 1122 §4.2.3.9): reported only on request.
        client.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        client.connect((netns.MEDIA, 9))
        client.send(b"x")
        # The NAT answers with an ICMP network unreachable (RFC 1812 §5.2.7.1).
        with pytest.raises(OSError) as refused:
            async with asyncio.timeout(5):
                await asyncio.get_running_loop().sock_recv(client, 100)
        assert refused.value.errno == errno.ENETUNREACH
    media = topology.media.socket()
    with media, pytest.raises(OSError) as unreachable:
        media.sendto(b"x", (netns.CLIENT, 9))
    assert unreachable.value.errno == errno.ENETUNREACH
    with pytest.raises(netns.NetnsError, match="unreachable"):
        topology.nat.ip("route", "get", netns.MEDIA)
    assert topology.relay.run("sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"
    for namespace in (topology.nat, topology.relay, topology.media):
        assert "default" not in namespace.ip("route"), namespace.name


def _ip_counter(namespace: netns.Namespace, name: str) -> int:
    """One of the namespace's ``Ip:`` counters in /proc/net/snmp (RFC 4293's ipSystemStats)."""
    header, values = (
        line.split()[1:] for line in namespace.run("cat", "/proc/net/snmp").splitlines()[:2]
    )
    return int(values[header.index(name)])


async def test_the_relay_does_not_route_the_public_side_into_the_cluster(
    topology: netns.NatTopology,
) -> None:
    """Someone on the public side who routes the cluster range through the relay's public
    address reaches nothing: the relay drops the packet as not addressed to it (RFC 1812
    §5.3.1: a host does not forward), so only its TURN sockets lead into the cluster."""
    media = topology.media.socket()
    media.bind((netns.MEDIA, 0))
    outside = topology.nat.socket()
    topology.nat.ip("route", "add", netns.CLUSTER, "via", netns.RELAY_PUBLIC)
    try:
        before = _ip_counter(topology.relay, "InAddrErrors")
        outside.sendto(b"into the cluster", media.getsockname())

        await eventually(
            lambda: _ip_counter(topology.relay, "InAddrErrors") > before,
            "the relay dropped the packet",
        )
        with pytest.raises(BlockingIOError):
            media.recvfrom(100)
    finally:
        topology.nat.ip("route", "del", netns.CLUSTER)
        media.close()
        outside.close()


def test_topology_is_deleted_after_use() -> None:
    """Every namespace the context manager made is gone afterwards, with what ran inside."""
    with netns.nat_topology() as topology:
        names = [namespace.name for namespace in topology.all]
        # A process left running inside holds its namespace alive: it is ended first.
        process = subprocess.Popen(topology.media.argv("sleep", "60"))
    assert process.wait(timeout=10) == -9
    listed = netns.run_command(["ip", "netns", "list"])
    assert not [name for name in names if name in listed]


def test_a_failure_while_building_still_deletes_what_was_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Wiring that fails halfway raises its own error, and leaves no namespace behind."""
    made: list[str] = []

    def broken(topology: netns.NatTopology, **options: object) -> None:
        made.extend(namespace.name for namespace in topology.all)
        raise netns.NetnsError("wiring failed")

    monkeypatch.setattr(netns, "_wire", broken)
    with pytest.raises(netns.NetnsError, match="wiring failed"), netns.nat_topology():
        pass
    listed = netns.run_command(["ip", "netns", "list"])
    assert made and not [name for name in made if name in listed]


def test_namespaces_of_a_killed_run_are_swept_by_the_next() -> None:
    """A run killed outright leaves its namespaces; the next topology deletes them (their
    pid is dead) and leaves a live process's alone."""
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=10)
    abandoned = f"tsnat{gone.pid}x0-client"
    mine = f"tsnat{os.getpid()}x999-client"
    for name in (abandoned, mine):
        netns.run_command(["ip", "netns", "add", name])
    try:
        with netns.nat_topology():
            listed = netns.run_command(["ip", "netns", "list"]).split()
            assert abandoned not in listed
            assert mine in listed
    finally:
        for name in (abandoned, mine):
            with contextlib.suppress(netns.NetnsError):
                netns.run_command(["ip", "netns", "delete", name])


def test_without_root_these_tests_fail_under_ci_and_skip_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs root"):
        require_root()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        require_root()
