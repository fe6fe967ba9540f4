"""Peer policy gaps found by an attack round (RFC 8656 §17, SSRF).

Cloud UDP infrastructure outside the link-local ranges was reachable (AWS's IPv6 DNS, NTP and
metadata, Azure's wire server, Alibaba Cloud's metadata); Teredo and ISATAP addresses were
checked as plain IPv6, so a denied IPv4 address could be named through them; a peer on port 0
was accepted.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from relay.core.peer_policy import PeerPolicy, normalize_peer
from relay.proto import turn
from relay.proto.stun import MessageClass
from tests.relay.test_handler import PEER, Client, FakeEndpoint, code, make_handler


def teredo(server: str, client: str, port: int = 40000) -> str:
    """A Teredo address (RFC 4380 §4): server IPv4, flags, obfuscated port and client IPv4."""
    n = (0x2001_0000 << 96) | (int(IPv4Address(server)) << 64) | ((port ^ 0xFFFF) << 32)
    return str(IPv6Address(n | (int(IPv4Address(client)) ^ 0xFFFFFFFF)))


@pytest.mark.parametrize(
    "peer",
    ["fd00:ec2::253", "fd00:ec2::123", "fd00:ec2::254", "168.63.129.16", "100.100.100.200"],
)
def test_cloud_infrastructure_endpoints_are_denied(peer: str) -> None:
    for policy in (PeerPolicy(), PeerPolicy(["0.0.0.0/0", "[::/0]"])):
        assert not policy.permits(peer, 53)
        assert not policy.permits_host(peer)
    if "." in peer:
        assert not PeerPolicy().permits(f"::ffff:{peer}", 53)
    assert PeerPolicy().permits("fd00:ec2::1", 53)  # only the endpoints, not the /64
    assert PeerPolicy().permits("168.63.129.17", 53)


def test_teredo_is_checked_as_its_server_and_its_client() -> None:
    policy = PeerPolicy()
    # RFC 4380 §4's example: server 65.54.227.120, client 192.0.2.45
    assert normalize_peer("2001:0:4136:e378:8000:63bf:3fff:fdd2") == IPv4Address("192.0.2.45")
    assert policy.permits(teredo("65.54.227.120", "192.0.2.45"), 5000)
    for server, client in [
        ("65.54.227.120", "127.0.0.1"),
        ("65.54.227.120", "169.254.169.254"),
        ("127.0.0.1", "192.0.2.45"),
        ("169.254.169.254", "192.0.2.45"),
        ("65.54.227.120", "168.63.129.16"),
    ]:
        assert not policy.permits(teredo(server, client), 5000), (server, client)
        assert not policy.permits_host(teredo(server, client)), (server, client)
    # with an allow list, the IPv4 addresses must be listed too
    assert not PeerPolicy(["[2001::/32]"]).permits(teredo("65.54.227.120", "10.0.0.1"), 5000)


def isatap(prefix: str, interface: int, v4: str) -> str:
    """An ISATAP address (RFC 5214 §6.1): a /64 prefix, ``interface``:5efe, the IPv4 address."""
    upper = int(IPv6Address(prefix)) & ~((1 << 64) - 1)
    return str(IPv6Address(upper | (interface << 48) | (0x5EFE << 32) | int(IPv4Address(v4))))


@pytest.mark.parametrize("prefix", ["2001:db8:1:2::", "fe80::", "::", "2001:db8::"])
@pytest.mark.parametrize("interface", [0x0000, 0x0200, 0x0100, 0x0300])
def test_isatap_is_checked_as_its_ipv4_address(prefix: str, interface: int) -> None:
    policy = PeerPolicy()
    for v4 in ("127.0.0.1", "169.254.169.254", "100.100.100.200", "0.0.0.0"):
        address = isatap(prefix, interface, v4)
        assert normalize_peer(address) == IPv4Address(v4)
        assert not policy.permits(address, 5000), address
        assert not policy.permits_host(address), address
    # link-local stays denied as itself even when its IPv4 address is public
    public = isatap(prefix, interface, "192.0.2.45")
    assert policy.permits(public, 5000) is (prefix != "fe80::")


def test_peer_port_zero_is_400_and_a_send_to_it_is_dropped() -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    client.allocate()
    zero = (PEER[0], 0)
    assert code(client.request(turn.CREATE_PERMISSION, peers=(PEER, zero))) == 400
    assert recorder.created[0].permissions == {}
    attrs = [(turn.CHANNEL_NUMBER, turn.encode_channel_number(0x4000))]
    assert code(client.request(turn.CHANNEL_BIND, attrs, (zero,))) == 400
    assert code(client.request(turn.CREATE_PERMISSION, peers=(PEER,))) == 200
    builder = client.builder(turn.SEND, [(turn.DATA, b"x")], (zero,), cls=MessageClass.INDICATION)
    assert client.send(builder.encode()) is None
    endpoint = recorder.created[0].relay
    assert isinstance(endpoint, FakeEndpoint) and endpoint.sent == []
