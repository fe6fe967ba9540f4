"""Peer access policy: which peers a client may reach through the relay (SSRF protection).

A TURN server relays to whatever address a client names, so without a policy it is an open
door into the network it runs in: loopback services, the cloud metadata endpoint
(169.254.169.254), multicast... RFC 8656 lets a server "impose restrictions on the IP address
and port values allowed in the XOR-PEER-ADDRESS attribute": CreatePermission (§10.2) and
ChannelBind (§12.2) are then answered 403 (Forbidden) and a Send indication (§11.2) is silently
discarded. This module is that policy; it runs on those requests, not per packet.

Rules:

1. Every IPv6 form that embeds an IPv4 address is checked as that IPv4 address: IPv4-mapped
   ``::ffff:0:0/96`` and IPv4-compatible ``::/96`` (RFC 4291 §2.5.5; ``::`` and ``::1`` stay
   IPv6), IPv4-translated ``::ffff:0:0:0/96`` (RFC 2765), NAT64 ``64:ff9b::/96`` (RFC 6052) and
   6to4 ``2002::/16`` (RFC 3056, IPv4 in bits 16..48). Two forms embed an IPv4 address in an
   address that is also a real IPv6 address, and are checked as every address they name (all
   must be permitted): Teredo ``2001::/32`` (RFC 4380 §4: the server's IPv4 in bits 32..64,
   the client's IPv4 stored XOR 0xffffffff in the last 32 bits) as itself, the server and the
   client; an ISATAP interface ID ``::0:5efe:a.b.c.d`` / ``::200:5efe:a.b.c.d`` (RFC 5214
   §6.1, under any /64 prefix, u/g bits ignored) as itself and ``a.b.c.d``. A Teredo or ISATAP
   peer therefore never reaches an address that is denied in its IPv4 form.
2. The default deny set (:data:`DEFAULT_DENY`) is always enforced: "this network", loopback,
   link-local, multicast, reserved and broadcast, plus the local-use NAT64 prefix
   ``64:ff9b:1::/48`` (RFC 8215) whose IPv4 position is operator-defined and so cannot be
   normalised, and the cloud providers' link-local-like UDP infrastructure endpoints that live
   outside those ranges (:data:`CLOUD_INFRASTRUCTURE`: AWS's IPv6 DNS, NTP and instance
   metadata, Azure's wire server, Alibaba Cloud's metadata). An allow entry lifts it only
   where the entry lies entirely inside a denied range (``127.0.0.1:9000`` opens that;
   ``0.0.0.0/0`` does not open loopback, nor ``100.64.0.0/10`` Alibaba's metadata).
   ``allow_loopback=True`` (local testing only) lifts it for 127.0.0.0/8 and ::1.
3. Without allow entries every other peer is permitted (unless ``exclusive``: then none is,
   which is what an allow-list built from Gateway API routes with no backends must mean);
   with them, only peers (and ports) that match an entry. Extra ``deny`` networks (e.g. the
   relay's own addresses) are absolute.

Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10) are NOT denied by default,
because the media servers a relay exists to reach usually live there; restrict them with allow
entries in production.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Final

__all__ = [
    "CLOUD_INFRASTRUCTURE",
    "DEFAULT_DENY",
    "PERMIT_CACHE_SIZE",
    "PeerPolicy",
    "PeerRule",
    "SelfEndpoints",
    "normalize_peer",
    "parse_peer_rule",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

DEFAULT_DENY: Final[tuple[str, ...]] = (
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
    "64:ff9b:1::/48",
)
#: Cloud infrastructure endpoints reachable over UDP from inside a VM or pod that are not in
#: the ranges above (169.254.169.254 is link-local already): AWS Route 53 Resolver, Time Sync
#: and IMDS over IPv6 (``fd00:ec2::253``, ``::123``, ``::254``), the Azure wire server / DNS
#: (``168.63.129.16``) and the Alibaba Cloud metadata service (``100.100.100.200``). Part of
#: the default deny set (RFC 8656 §17: "the server MAY restrict ... the peer addresses").
CLOUD_INFRASTRUCTURE: Final[tuple[str, ...]] = (
    "fd00:ec2::253/128",
    "fd00:ec2::123/128",
    "fd00:ec2::254/128",
    "168.63.129.16/32",
    "100.100.100.200/32",
)
#: Answers :meth:`PeerPolicy.permits_address` keeps before it starts over.
PERMIT_CACHE_SIZE: Final = 4096
_LOOPBACK: Final[tuple[IPNetwork, ...]] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))

# IPv6 prefixes whose addresses are checked as the IPv4 address they embed.
_EMBEDDING: Final[tuple[IPv6Network, ...]] = (
    IPv6Network("::ffff:0:0/96"),
    IPv6Network("::ffff:0:0:0/96"),
    IPv6Network("64:ff9b::/96"),
    IPv6Network("2002::/16"),
    IPv6Network("::/96"),
)
_NOT_EMBEDDED: Final = IPv6Network("::/127")  # :: and ::1 are themselves, not IPv4

_V4_MASK: Final = 0xFFFFFFFF
_MAPPED: Final = 0xFFFF  # upper 96 bits of ::ffff:a.b.c.d
_TRANSLATED: Final = 0xFFFF_0000  # upper 96 bits of ::ffff:0:a.b.c.d
_NAT64: Final = int(IPv6Address("64:ff9b::")) >> 32
_SIX_TO_FOUR: Final = 0x2002
_TEREDO: Final = 0x2001_0000  # upper 32 bits of 2001::/32
_ISATAP_MASK: Final = 0xFCFF_FFFF  # bits 32..64 of an ISATAP address, u/g bits ignored
_ISATAP: Final = 0x0000_5EFE

_USAGE: Final = "expected CIDR[:PORT[-PORT]], e.g. 10.0.0.0/8:5000-6000 or [2001:db8::/32]:443"


def _keys(ip: str | IPAddress) -> tuple[tuple[int, int], ...] | None:
    """Every ``(version, integer)`` the address is checked as (see rule 1), or None for an
    unparseable string."""
    if isinstance(ip, str):
        try:
            ip = ip_address(ip)
        except ValueError:
            return None
    n = int(ip)
    if ip.version == 4:
        return ((4, n),)
    upper = n >> 32
    if upper in (_MAPPED, _TRANSLATED, _NAT64) or (upper == 0 and n > 1):
        return ((4, n & _V4_MASK),)
    if n >> 112 == _SIX_TO_FOUR:
        return ((4, (n >> 80) & _V4_MASK),)
    if n >> 96 == _TEREDO:
        return ((4, (n & _V4_MASK) ^ _V4_MASK), (4, (n >> 64) & _V4_MASK), (6, n))
    if upper & _ISATAP_MASK == _ISATAP:
        return ((4, n & _V4_MASK), (6, n))
    return ((6, n),)


def normalize_peer(ip: str | IPAddress) -> IPAddress:
    """The address a peer is checked as: the embedded IPv4 address of every IPv4-in-IPv6 form
    (for Teredo the client's, for ISATAP the interface ID's), else the address itself. Raises
    ValueError for a string that is not an IP address."""
    keys = _keys(ip)
    if keys is None:
        raise ValueError(f"{ip!r} is not an IP address")
    version, n = keys[0]
    return IPv4Address(n) if version == 4 else IPv6Address(n)


def _check_not_embedded(network: IPNetwork, what: str) -> None:
    if isinstance(network, IPv6Network) and not network.subnet_of(_NOT_EMBEDDED):
        for prefix in _EMBEDDING:
            if network.subnet_of(prefix):
                raise ValueError(
                    f"{what}: {network} is inside {prefix}, whose addresses are checked as the "
                    "IPv4 address they embed; write the IPv4 range instead"
                )


@dataclass(frozen=True, slots=True)
class PeerRule:
    """An allow entry: a network and an inclusive port range (all ports by default)."""

    network: IPNetwork
    port_min: int = 0
    port_max: int = 0xFFFF

    def __post_init__(self) -> None:
        if not 0 <= self.port_min <= self.port_max <= 0xFFFF:
            raise ValueError(f"peer rule port range {self.port_min}-{self.port_max} is invalid")
        _check_not_embedded(self.network, f"peer rule {self.network}")

    def __str__(self) -> str:
        net = f"[{self.network}]" if self.network.version == 6 else str(self.network)
        if (self.port_min, self.port_max) == (0, 0xFFFF):
            return net
        if self.port_min == self.port_max:
            return f"{net}:{self.port_min}"
        return f"{net}:{self.port_min}-{self.port_max}"


def _parse_port(text: str, entry: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"--allow-peer {entry!r}: port {text!r} is not a number; {_USAGE}")
    port = int(text)
    if not 1 <= port <= 0xFFFF:
        raise ValueError(f"--allow-peer {entry!r}: port {port} is outside 1..65535")
    return port


def parse_peer_rule(text: str) -> PeerRule:
    """Parse an ``--allow-peer`` entry: ``CIDR[:PORT[-PORT]]``, IPv6 in brackets.

    Examples: ``10.0.0.0/8``, ``192.0.2.7:3478``, ``10.1.0.0/16:5000-6000``,
    ``[2001:db8::/32]:5000-6000``, ``[::1]``. A bare address means a single host. Raises
    ValueError with a message naming the entry and the problem.
    """
    entry = text.strip()
    if not entry:
        raise ValueError(f"--allow-peer entry is empty; {_USAGE}")
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            raise ValueError(f"--allow-peer {text!r}: missing ']'; {_USAGE}")
        net_text, rest = entry[1:close], entry[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"--allow-peer {text!r}: expected ':PORT' after ']'; {_USAGE}")
        port_text: str | None = rest[1:] if rest else None
        bracketed = True
    else:
        if entry.count(":") > 1:
            raise ValueError(
                f"--allow-peer {text!r}: write IPv6 ranges in brackets, e.g. [2001:db8::/32]:443"
            )
        net_text, colon, port_part = entry.partition(":")
        port_text = port_part if colon else None
        bracketed = False
    try:
        network = ip_network(net_text, strict=True)
    except ValueError as exc:
        try:
            loose = ip_network(net_text, strict=False)
        except ValueError:
            raise ValueError(
                f"--allow-peer {text!r}: {net_text!r} is not an IP address or CIDR; {_USAGE}"
            ) from exc
        raise ValueError(
            f"--allow-peer {text!r}: {net_text} has host bits set; did you mean {loose}?"
        ) from exc
    if bracketed and network.version != 6:
        raise ValueError(f"--allow-peer {text!r}: brackets are only for IPv6; {_USAGE}")
    port_min, port_max = 0, 0xFFFF
    if port_text is not None:
        low, dash, high = port_text.partition("-")
        port_min = _parse_port(low, text)
        port_max = _parse_port(high, text) if dash else port_min
        if port_min > port_max:
            raise ValueError(f"--allow-peer {text!r}: port range {port_min}-{port_max} is empty")
    try:
        return PeerRule(network, port_min, port_max)
    except ValueError as exc:
        raise ValueError(f"--allow-peer {text!r}: {exc}") from None


def _ranges(networks: Iterable[IPNetwork], version: int) -> tuple[tuple[int, int], ...]:
    return tuple(
        (int(n.network_address), int(n.broadcast_address)) for n in networks if n.version == version
    )


def _lifts(network: IPNetwork, denied: Iterable[IPNetwork]) -> bool:
    """Whether an allow entry lies entirely inside one of the denied networks."""
    lo, hi = int(network.network_address), int(network.broadcast_address)
    return any(
        d.version == network.version
        and int(d.network_address) <= lo
        and hi <= int(d.broadcast_address)
        for d in denied
    )


def _inside(n: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= n <= hi for lo, hi in ranges)


class PeerPolicy:
    """Decides whether a client may reach a peer; see the module docstring for the rules."""

    __slots__ = (
        "_cache",
        "_default",
        "_hard",
        "_loopback",
        "_rules",
        "allow_loopback",
        "exclusive",
        "rules",
    )

    def __init__(
        self,
        allow: Iterable[PeerRule | str] = (),
        *,
        allow_loopback: bool = False,
        deny: Iterable[str | IPNetwork] = (),
        exclusive: bool = False,
    ) -> None:
        if isinstance(allow, str):
            raise TypeError("allow must be a list of entries, not one string")
        self.rules: tuple[PeerRule, ...] = tuple(
            r if isinstance(r, PeerRule) else parse_peer_rule(r) for r in allow
        )
        self.allow_loopback = allow_loopback
        #: Only the allow entries are reachable, even when there are none.
        self.exclusive = exclusive
        default = [ip_network(n) for n in DEFAULT_DENY + CLOUD_INFRASTRUCTURE]
        hard: list[IPNetwork] = []
        for d in deny:
            network = d if isinstance(d, IPv4Network | IPv6Network) else ip_network(d, strict=False)
            _check_not_embedded(network, f"deny {network}")
            hard.append(network)
        self._default = {v: _ranges(default, v) for v in (4, 6)}
        self._hard = {v: _ranges(hard, v) for v in (4, 6)}
        self._loopback = {v: _ranges(_LOOPBACK, v) for v in (4, 6)}
        self._rules = tuple(
            (
                r.network.version,
                int(r.network.network_address),
                int(r.network.broadcast_address),
                r.port_min,
                r.port_max,
                _lifts(r.network, default),
            )
            for r in self.rules
        )
        self._cache: dict[tuple[str, int], bool] = {}

    def __repr__(self) -> str:
        allow = ", ".join(str(r) for r in self.rules)
        exclusive = ", exclusive=True" if self.exclusive else ""
        return f"PeerPolicy(allow=[{allow}], allow_loopback={self.allow_loopback}{exclusive})"

    def permits(self, ip: str | IPAddress, port: int) -> bool:
        """Whether a client may exchange data with ``ip``:``port`` (Send, ChannelBind, Data)."""
        if not 0 <= port <= 0xFFFF:
            return False
        keys = _keys(ip)
        return keys is not None and all(self._decide(key, port) for key in keys)

    def permits_address(self, peer: tuple[str, int]) -> bool:
        """:meth:`permits` for ``(host, port)``, cached: for Send indications, where the same
        few peers come again and again. The cache lives as long as the policy (a replacement
        starts empty) and is cleared when it holds :data:`PERMIT_CACHE_SIZE` answers."""
        cache = self._cache
        allowed = cache.get(peer)
        if allowed is None:
            allowed = self.permits(peer[0], peer[1])
            if len(cache) >= PERMIT_CACHE_SIZE:
                cache.clear()
            cache[peer] = allowed
        return allowed

    def permits_host(self, ip: str | IPAddress) -> bool:
        """Whether some port of ``ip`` is permitted: for CreatePermission, which ignores ports
        (RFC 8656 §9)."""
        keys = _keys(ip)
        return keys is not None and all(self._decide(key, None) for key in keys)

    def _decide(self, key: tuple[int, int], port: int | None) -> bool:
        version, n = key
        if _inside(n, self._hard[version]):
            return False
        if self.allow_loopback and _inside(n, self._loopback[version]):
            return True
        denied = _inside(n, self._default[version])
        if not self._rules:
            return not denied and not self.exclusive
        for r_version, lo, hi, port_min, port_max, lifts in self._rules:
            if (
                r_version == version
                and lo <= n <= hi
                and (port is None or port_min <= port <= port_max)
                and (lifts or not denied)
            ):
                return True
        return False


_UNSPECIFIED: Final = frozenset({"0.0.0.0", "::"})


class SelfEndpoints:
    """The relay's own endpoints (listeners, health), which no client may name as a peer, on
    any policy and whatever ``--allow-peer`` says: a Send or ChannelData to the relay's own
    listener would nest an allocation inside an allocation (a relay loop, and a way to hide
    the real client), RFC 8656 §17 ("the server MAY restrict ... the peer addresses").

    An endpoint on a wildcard host (``0.0.0.0``, ``::``) is its port on the wildcard itself,
    on the relay address and on the family's loopback range. Addresses are compared in their
    normalised forms (:func:`normalize_peer`, every one of a Teredo or ISATAP address).
    """

    __slots__ = ("_exact", "_ranges", "endpoints")

    def __init__(self, endpoints: Iterable[tuple[str, int]] = (), relay_address: str = "") -> None:
        #: The endpoints as given (host, port).
        self.endpoints: tuple[tuple[str, int], ...] = tuple(endpoints)
        exact: set[tuple[int, int, int]] = set()
        ranges: list[tuple[int, int, int, int]] = []
        for host, port in self.endpoints:
            hosts = [host]
            if host in _UNSPECIFIED:
                if relay_address:
                    hosts.append(relay_address)
                loopback = _LOOPBACK[0 if host == "0.0.0.0" else 1]
                lo, hi = int(loopback.network_address), int(loopback.broadcast_address)
                ranges.append((loopback.version, lo, hi, port))
            for name in hosts:
                keys = _keys(name.partition("%")[0])
                if keys is None:
                    raise ValueError(f"{name!r} is not an IP address")
                exact.add((*keys[0], port))
        self._exact = frozenset(exact)
        self._ranges = tuple(ranges)

    def __repr__(self) -> str:
        return f"SelfEndpoints({list(self.endpoints)!r})"

    def covers(self, ip: str | IPAddress, port: int) -> bool:
        """Whether ``ip``:``port`` is one of the relay's own endpoints."""
        if not self._exact:
            return False
        keys = _keys(ip)
        if keys is None:
            return False
        for version, n in keys:
            if (version, n, port) in self._exact:
                return True
            for r_version, lo, hi, r_port in self._ranges:
                if r_version == version and r_port == port and lo <= n <= hi:
                    return True
        return False
