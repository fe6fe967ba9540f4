"""Peer access policy (SSRF protection)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.peer_policy import (
    PERMIT_CACHE_SIZE,
    PeerPolicy,
    PeerRule,
    normalize_peer,
    parse_peer_rule,
)

DENIED = [
    "0.0.0.0",
    "0.1.2.3",
    "127.0.0.1",
    "127.255.255.254",
    "::",
    "::1",
    "169.254.169.254",
    "fe80::1",
    "fe80::1%eth0",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    # IPv4-mapped
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    # IPv4-compatible
    "::127.0.0.1",
    "::169.254.169.254",
    "::0.0.0.2",
    # IPv4-translated (RFC 2765)
    "::ffff:0:7f00:1",
    # NAT64
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::e000:1",
    # 6to4
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    "2002:0:0::",
    # local-use NAT64 (RFC 8215): cannot be normalised, so denied
    "64:ff9b:1::a00:1",
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "203.0.113.9",
    "10.0.0.1",  # private ranges are not denied by default (media servers live there)
    "192.168.1.1",
    "2001:db8::1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "fd00::1",
]


@pytest.mark.parametrize("address", DENIED)
def test_denied_by_default(address: str) -> None:
    policy = PeerPolicy()
    assert not policy.permits(address, 3478)
    assert not policy.permits_host(address)
    if "%" not in address:
        assert not policy.permits(ip_address(address), 3478)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_allowed_without_allow_list(address: str) -> None:
    policy = PeerPolicy()
    assert policy.permits(address, 3478)
    assert policy.permits(address, 0)
    assert policy.permits(ip_address(address), 65535)
    assert policy.permits_host(address)


def test_normalisation() -> None:
    assert normalize_peer("::ffff:127.0.0.1") == IPv4Address("127.0.0.1")
    assert normalize_peer("::ffff:0:a00:1") == IPv4Address("10.0.0.1")
    assert normalize_peer("::127.0.0.1") == IPv4Address("127.0.0.1")
    assert normalize_peer("64:ff9b::7f00:1") == IPv4Address("127.0.0.1")
    assert normalize_peer("2002:7f00:1::") == IPv4Address("127.0.0.1")
    assert normalize_peer("2002:c000:0201:1::5") == IPv4Address("192.0.2.1")
    assert normalize_peer("::") == IPv6Address("::")
    assert normalize_peer("::1") == IPv6Address("::1")
    assert normalize_peer(IPv6Address("2001:db8::1")) == IPv6Address("2001:db8::1")
    assert normalize_peer("192.0.2.1") == IPv4Address("192.0.2.1")
    with pytest.raises(ValueError):
        normalize_peer("example.com")


def test_bad_input_is_denied() -> None:
    policy = PeerPolicy()
    assert not policy.permits("example.com", 80)
    assert not policy.permits("", 80)
    assert not policy.permits("8.8.8.8", -1)
    assert not policy.permits("8.8.8.8", 65536)
    assert not policy.permits_host("not an ip")


def test_allow_loopback() -> None:
    policy = PeerPolicy(allow_loopback=True)
    for address in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"):
        assert policy.permits(address, 9000), address
    for address in ("169.254.169.254", "0.0.0.0", "::", "224.0.0.1"):
        assert not policy.permits(address, 9000), address
    assert policy.permits("8.8.8.8", 53)


def test_allow_list_restricts_to_cidr_and_ports() -> None:
    policy = PeerPolicy(["10.0.0.0/8:5000-6000", "192.0.2.7:3478", "[2001:db8::/32]:443"])
    assert policy.permits("10.1.2.3", 5000)
    assert policy.permits("10.1.2.3", 6000)
    assert not policy.permits("10.1.2.3", 4999)
    assert not policy.permits("10.1.2.3", 6001)
    assert policy.permits("::ffff:10.1.2.3", 5500)  # embedded forms match the IPv4 rule
    assert policy.permits("192.0.2.7", 3478)
    assert not policy.permits("192.0.2.8", 3478)
    assert policy.permits("2001:db8:ffff::1", 443)
    assert not policy.permits("2001:db9::1", 443)
    assert not policy.permits("8.8.8.8", 5000)  # public, but not listed
    assert policy.permits_host("10.1.2.3")  # CreatePermission: some port is allowed
    assert not policy.permits_host("8.8.8.8")


def test_allow_list_can_open_a_denied_range_explicitly() -> None:
    policy = PeerPolicy(["127.0.0.1:9000", "[::1]", "169.254.169.254/32:80"])
    assert policy.permits("127.0.0.1", 9000)
    assert policy.permits("::ffff:127.0.0.1", 9000)
    assert not policy.permits("127.0.0.1", 9001)
    assert not policy.permits("127.0.0.2", 9000)
    assert policy.permits("::1", 1)
    assert policy.permits("169.254.169.254", 80)
    assert not policy.permits("169.254.169.253", 80)


def test_broad_allow_entries_do_not_open_denied_ranges() -> None:
    policy = PeerPolicy(["0.0.0.0/0", "[::/0]"])
    assert policy.permits("8.8.8.8", 53)
    assert policy.permits("2001:db8::1", 53)
    for address in DENIED:
        assert not policy.permits(address, 80), address


def test_extra_deny_is_absolute() -> None:
    policy = PeerPolicy(["10.0.0.0/8"], deny=["10.0.0.5", ip_network("10.9.0.0/16")])
    assert policy.permits("10.0.0.4", 1)
    assert not policy.permits("10.0.0.5", 1)
    assert not policy.permits("::ffff:10.0.0.5", 1)
    assert not policy.permits("10.9.1.1", 1)
    with pytest.raises(ValueError, match="IPv4"):
        PeerPolicy(deny=["::ffff:10.0.0.5"])


@pytest.mark.parametrize(
    ("text", "network", "ports"),
    [
        ("10.0.0.0/8", "10.0.0.0/8", (0, 65535)),
        (" 10.0.0.0/8 ", "10.0.0.0/8", (0, 65535)),
        ("192.0.2.7", "192.0.2.7/32", (0, 65535)),
        ("192.0.2.7:3478", "192.0.2.7/32", (3478, 3478)),
        ("10.1.0.0/16:5000-6000", "10.1.0.0/16", (5000, 6000)),
        ("[2001:db8::/32]:5000-6000", "2001:db8::/32", (5000, 6000)),
        ("[2001:db8::/32]", "2001:db8::/32", (0, 65535)),
        ("[::1]:443", "::1/128", (443, 443)),
        ("[::]", "::/128", (0, 65535)),
        ("[::/0]", "::/0", (0, 65535)),
    ],
)
def test_parse_peer_rule(text: str, network: str, ports: tuple[int, int]) -> None:
    rule = parse_peer_rule(text)
    assert rule == PeerRule(ip_network(network), *ports)
    assert parse_peer_rule(str(rule)) == rule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("bogus", "not an IP address or CIDR"),
        ("10.0.0.0/33", "not an IP address or CIDR"),
        ("10.0.0.1/8", "host bits set; did you mean 10.0.0.0/8"),
        ("10.0.0.0/8:", "port '' is not a number"),
        ("10.0.0.0/8:http", "port 'http' is not a number"),
        ("10.0.0.0/8:0", "outside 1..65535"),
        ("10.0.0.0/8:70000", "outside 1..65535"),
        ("10.0.0.0/8:6000-5000", "is empty"),
        ("10.0.0.0/8:5000-", "not a number"),
        ("10.0.0.0/8:-5", "not a number"),
        ("10.0.0.0/8:1-2-3", "not a number"),
        ("10.0.0.0/8:+5", "not a number"),
        ("2001:db8::/32", "brackets"),
        ("2001:db8::/32:443", "brackets"),
        ("[2001:db8::/32", "missing ']'"),
        ("[2001:db8::/32]443", "expected ':PORT'"),
        ("[10.0.0.0/8]:443", "brackets are only for IPv6"),
        ("[::ffff:10.0.0.0/104]", "write the IPv4 range instead"),
        ("[64:ff9b::/96]", "write the IPv4 range instead"),
        ("[2002:a00::/24]", "write the IPv4 range instead"),
        ("[::a00:1]", "write the IPv4 range instead"),
    ],
)
def test_bad_rules_raise_clear_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="--allow-peer") as info:
        parse_peer_rule(text)
    assert message in str(info.value)
    with pytest.raises(ValueError):
        PeerPolicy([text])


def test_rule_validation_and_repr() -> None:
    with pytest.raises(ValueError):
        PeerRule(ip_network("10.0.0.0/8"), 10, 5)
    with pytest.raises(ValueError, match="IPv4"):
        PeerRule(ip_network("::ffff:0:0/96"))
    policy = PeerPolicy(["10.0.0.0/8:5000-6000", "[2001:db8::/32]:443"], allow_loopback=True)
    assert repr(policy) == (
        "PeerPolicy(allow=[10.0.0.0/8:5000-6000, [2001:db8::/32]:443], allow_loopback=True)"
    )


@settings(deadline=None, max_examples=500)
@given(st.integers(0, 2**32 - 1), st.integers(0, 65535))
def test_every_ipv4_embedding_agrees_with_plain_ipv4(n: int, port: int) -> None:
    policy = PeerPolicy()
    plain = policy.permits(IPv4Address(n), port)
    forms = [
        IPv6Address((0xFFFF << 32) | n),  # mapped
        IPv6Address((0xFFFF0000 << 32) | n),  # translated
        IPv6Address(int(IPv6Address("64:ff9b::")) | n),  # NAT64
        IPv6Address((0x2002 << 112) | (n << 80) | 0xABCD),  # 6to4
    ]
    if n > 1:
        forms.append(IPv6Address(n))  # compatible
    for form in forms:
        assert policy.permits(form, port) is plain, form
        assert policy.permits(str(form), port) is plain, form


def test_permits_address_is_permits_cached_and_bounded() -> None:
    policy = PeerPolicy(["10.0.0.0/8:5000"])
    for peer in [("10.1.2.3", 5000), ("10.1.2.3", 5001), ("8.8.8.8", 5000)] * 2:
        assert policy.permits_address(peer) is policy.permits(*peer)
    for port in range(PERMIT_CACHE_SIZE + 10):
        assert policy.permits_address(("10.0.0.1", port)) is (port == 5000)
    assert len(policy._cache) <= PERMIT_CACHE_SIZE
