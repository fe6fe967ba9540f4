"""Allocation state (RFC 8656 §2.2, §7-§12), sans-I/O: plain values and an injected clock.

An :class:`Allocation` is keyed by its 5-tuple (:class:`FiveTuple`: client transport, client
address, listener address) and holds:

* permissions (§9): peer IP -> expiry, 300 s from the last CreatePermission or ChannelBind;
* channel bindings (§12): channel number <-> peer transport address, both directions, 600 s;
* its own expiry (§7.2): the granted lifetime from the last Allocate or Refresh.

Expiry needs no task or timer handle per object. The :class:`AllocationTable` keeps one heap
of ``(deadline, seq, allocation)`` where each allocation's deadline is the earliest of its own
expiry and those of its permissions and channels. One periodic sweep pops due entries: an
allocation past its expiry is removed and returned; otherwise its lapsed permissions and
channels are pruned and it is pushed back at its next deadline. Refreshing only moves an
object's expiry later, so it costs no heap operation (the entry that fires early just
reschedules); anything that makes a deadline earlier (a new permission, a shorter Refresh)
pushes a new entry and the superseded one is skipped when it surfaces. So objects live until
at most one sweep interval past their expiry, and the heap holds about one entry per
allocation.

Quotas: ``user_quota`` relayed ports per quota key (:func:`quota_key`: ``static:NAME``,
``rest:USERID``, or one shared budget for anonymous REST credentials) and ``total_quota`` in
all; 0 means unlimited. EVEN-PORT reservations hold a port each until claimed or lapsed.
The fleet-wide quota per user is the scalers' to count: ``fleet_refuses`` (set by the
reporting layer) says whether they list a quota key, and such a key gets no new allocation.
Every refusal (486 Allocation Quota Reached, RFC 8656 §7.2) is counted in ``refused`` by
reason: ``total_quota``, ``user_quota``, ``fleet_user_quota``.

Lifetimes (§7.2, §8.2, :class:`Lifetimes`): the granted lifetime is the requested one capped
at ``max_lifetime``, and never below the default (600 s, or ``max_lifetime`` when that is
shorter).
"""

from __future__ import annotations

import heapq
import itertools
import math
import secrets
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from relay.core.auth import CredentialStore
from relay.core.peer_policy import PeerPolicy
from relay.proto import turn

__all__ = [
    "ANONYMOUS_REST",
    "FLEET_USER_QUOTA",
    "REFUSAL_REASONS",
    "TOTAL_QUOTA",
    "USER_QUOTA",
    "Address",
    "Allocation",
    "AllocationTable",
    "Binding",
    "ClientAddress",
    "ClientLink",
    "FiveTuple",
    "Lifetimes",
    "Payload",
    "RelayEndpoint",
    "quota_key",
]

#: An IP address (canonical text form) and a port.
Address = tuple[str, int]
#: A client's address exactly as its socket reports it: ``(host, port)``, or for IPv6
#: ``(host, port, flowinfo, scope_id)``.
ClientAddress = tuple[str, int] | tuple[str, int, int, int]
#: What the packet path sends: received bytes, or a slice of a receive buffer.
Payload = bytes | bytearray | memoryview


class RelayEndpoint(Protocol):
    """An allocation's relayed transport address (RFC 8656 §2): one UDP socket, owned by the
    I/O layer (:class:`relay.net.relayed.RelaySocket`)."""

    @property
    def address(self) -> Address:
        """The relayed transport address advertised in XOR-RELAYED-ADDRESS."""
        ...

    def sendto(self, data: Payload, peer: Address, /) -> int:
        """Send one datagram to ``peer`` (ChannelData from the client, RFC 8656 §12.6): the
        socket's own ``sendto``, uncounted; raises :class:`OSError` (the caller drops it)."""
        ...

    def send(self, data: bytes, peer: Address) -> None:
        """Send a Send indication's data to ``peer`` (RFC 8656 §11.2), counted; an error
        drops it."""
        ...

    def attach(self, allocation: Allocation) -> None:
        """Start relaying what peers send to ``allocation``'s client (the allocation exists)."""
        ...

    def close(self) -> None:
        """Stop relaying; release the socket and its port."""
        ...


class ClientLink(Protocol):
    """Where an allocation's client is: a UDP listener (shared by its clients) or one TCP
    connection (:mod:`relay.net.udp`, :mod:`relay.net.tcp`)."""

    @property
    def transport(self) -> str:
        """``udp`` or ``tcp``: the client's transport, part of the 5-tuple."""
        ...

    @property
    def local(self) -> Address:
        """The server's address of this link (the listener's bound address)."""
        ...

    def sendto(self, data: Payload, client: ClientAddress, /) -> object:
        """Send one message (ChannelData, a Data indication) to ``client``. A UDP listener's
        is its socket's ``sendto`` (raises :class:`OSError`, the caller drops and does not
        count it); a TCP connection's copies the bytes, counts them, and drops them while
        the connection is backed up."""
        ...

    def attach(self, allocation: Allocation) -> None:
        """Route the client's data to ``allocation`` (it was just created)."""
        ...

    def detach(self, allocation: Allocation) -> None:
        """Stop routing to ``allocation`` (it was deleted)."""
        ...


class FiveTuple(NamedTuple):
    """What identifies an allocation (RFC 8656 §2.2): the client's transport protocol, the
    client's address (``(host, port)``) and the server address it talks to."""

    transport: str
    client: Address
    server: Address


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """Allocation lifetime policy: RFC 8656 §7.2 (Allocate) and §8.2 (Refresh)."""

    max_lifetime: int = turn.MAX_LIFETIME
    default_lifetime: int = turn.DEFAULT_LIFETIME

    def __post_init__(self) -> None:
        if self.max_lifetime < 1:
            raise ValueError("the maximum allocation lifetime must be at least 1 s")
        if self.default_lifetime < 1:
            raise ValueError("the default allocation lifetime must be at least 1 s")

    @property
    def default(self) -> int:
        """The lifetime given when none is asked for: 600 s, capped at the maximum."""
        return min(self.default_lifetime, self.max_lifetime)

    def grant(self, requested: int | None) -> int:
        """``max(default, min(requested, max))``; the default when nothing is requested.

        A requested 0 is the caller's business (Refresh deletes); here it yields the default.
        """
        if requested is None:
            return self.default
        return max(self.default, min(requested, self.max_lifetime))


#: The one budget every anonymous TURN REST API credential (``EXPIRY`` alone) shares.
ANONYMOUS_REST: Final = "rest:"

#: Why an Allocate got 486, as counted in :attr:`AllocationTable.refused`.
TOTAL_QUOTA: Final = "total_quota"
USER_QUOTA: Final = "user_quota"
FLEET_USER_QUOTA: Final = "fleet_user_quota"
REFUSAL_REASONS: Final = (USER_QUOTA, TOTAL_QUOTA, FLEET_USER_QUOTA)


def quota_key(username: str, *, static: bool = False) -> str:
    """Whose quota an allocation counts against, unambiguously.

    ``static:NAME`` for a static user (``static`` is what authenticated it); ``rest:USERID``
    for a TURN REST API username ``EXPIRY:USERID``, so every fresh credential of one user
    shares one quota, and a REST user id never shares a static user's; and for an
    anonymous REST username (``EXPIRY`` alone) :data:`ANONYMOUS_REST`, one budget for all
    of them, since each such credential would otherwise be a fresh quota of its own.
    """
    if static:
        return f"static:{username}"
    expiry, _, user_id = username.partition(":")
    if expiry.isdigit():
        return f"rest:{user_id}"
    return f"static:{username}"


class Binding:
    """A channel binding: ``channel`` <-> ``peer`` until ``expiry`` (monotonic seconds)."""

    __slots__ = ("channel", "expiry", "peer")

    def __init__(self, channel: int, peer: Address, expiry: float) -> None:
        self.channel = channel
        self.peer = peer
        self.expiry = expiry

    def __repr__(self) -> str:
        return f"Binding({self.channel:#06x}, {self.peer!r}, expiry={self.expiry:.1f})"


class Allocation:
    """One allocation. Plain attributes, read directly by the packet path.

    ``relay`` is the relayed endpoint and ``link`` the way back to the client (a listener or
    connection), both owned by the I/O layer. ``peer_rx``/``peer_tx`` count payload bytes
    received and sent on the relayed socket.
    """

    __slots__ = (
        "allocate_response",
        "channels",
        "client_addr",
        "created",
        "credentials",
        "dont_fragment",
        "expiry",
        "family",
        "five_tuple",
        "id",
        "link",
        "peer_rx",
        "peer_tx",
        "peers",
        "permissions",
        "quota_key",
        "relay",
        "relayed",
        "removed",
        "retained",
        "scheduled",
        "transaction_id",
        "username",
    )

    def __init__(
        self,
        five_tuple: FiveTuple,
        username: str,
        *,
        relay: RelayEndpoint,
        link: ClientLink,
        family: int,
        created: float,
        lifetime: int,
        transaction_id: bytes = b"",
        client_addr: ClientAddress | None = None,
        allocation_id: str | None = None,
        dont_fragment: bool = False,
        credentials: CredentialStore | None = None,
        quota: str | None = None,
    ) -> None:
        self.id = secrets.token_hex(8) if allocation_id is None else allocation_id
        self.five_tuple = five_tuple
        self.username = username
        self.quota_key = quota_key(username) if quota is None else quota
        self.relayed: Address = relay.address
        self.family = family
        self.created = created
        self.expiry = created + lifetime
        self.scheduled = math.inf
        self.transaction_id = transaction_id
        self.allocate_response = b""
        self.relay = relay
        self.link = link
        #: The client address exactly as the socket reports it (IPv6: a 4-tuple).
        self.client_addr: ClientAddress = five_tuple.client if client_addr is None else client_addr
        self.dont_fragment = dont_fragment
        #: Peer IP (canonical text) -> expiry.
        self.permissions: dict[str, float] = {}
        #: Channel number -> binding, and peer ``(host, port)`` -> the same binding.
        self.channels: dict[int, Binding] = {}
        self.peers: dict[Address, Binding] = {}
        self.peer_rx = 0
        self.peer_tx = 0
        self.removed = False
        #: Peer IP -> the policy that let it in, for peers a newer policy no longer lists
        #: but this allocation holds a permission for (see RequestHandler.set_policy).
        self.retained: dict[str, PeerPolicy] | None = None
        #: The credential store this allocation was authenticated with: it stays valid for
        #: this allocation's requests after the relay's credentials change (see
        #: RequestHandler.handle).
        self.credentials = credentials

    def __repr__(self) -> str:
        return (
            f"Allocation({self.id}, {self.five_tuple.transport}, client={self.five_tuple.client},"
            f" relayed={self.relayed}, user={self.username!r})"
        )

    @property
    def transport(self) -> str:
        """The client's transport: ``udp`` or ``tcp``."""
        return self.five_tuple.transport

    def remaining(self, now: float) -> int:
        """Whole seconds until expiry (for LIFETIME in responses)."""
        return max(0, math.ceil(self.expiry - now))


_NEVER: Final = math.inf


class AllocationTable:
    """Every allocation of a relay, with quotas and heap-driven expiry. Not thread-safe."""

    def __init__(
        self,
        *,
        lifetimes: Lifetimes | None = None,
        permission_lifetime: float = turn.PERMISSION_LIFETIME,
        channel_lifetime: float = turn.CHANNEL_LIFETIME,
        user_quota: int = 0,
        total_quota: int = 0,
        refused: MutableMapping[str, int] | None = None,
    ) -> None:
        if user_quota < 0 or total_quota < 0:
            raise ValueError("quotas must not be negative (0 means unlimited)")
        self.lifetimes = Lifetimes() if lifetimes is None else lifetimes
        self.permission_lifetime = permission_lifetime
        self.channel_lifetime = channel_lifetime
        self.user_quota = user_quota
        self.total_quota = total_quota
        self._by_tuple: dict[FiveTuple, Allocation] = {}
        self._per_user: dict[str, int] = {}
        self._by_transport: dict[str, int] = {}
        self._heap: list[tuple[float, int, Allocation]] = []
        self._seq = itertools.count()
        # EVEN-PORT reservations (RFC 8656 §7.2): token -> (quota key, expiry). A reserved
        # port is held like an allocation's, so it counts against the quotas until it is
        # claimed or lapses; otherwise cycling reservations holds ports outside every quota.
        self._reservations: dict[bytes, tuple[str, float]] = {}
        #: Allocates refused (486) by reason; the relay's stats hand in their own dict.
        self.refused: MutableMapping[str, int] = (
            dict.fromkeys(REFUSAL_REASONS, 0) if refused is None else refused
        )
        #: Whether the scalers list a quota key as at or over the fleet-wide quota; the
        #: reporting layer sets it (:class:`relay.reporting.fleet_quota.FleetQuota`).
        self.fleet_refuses: Callable[[str], bool] | None = None

    # -- queries

    def __len__(self) -> int:
        return len(self._by_tuple)

    def __iter__(self) -> Iterator[Allocation]:
        return iter(list(self._by_tuple.values()))

    def get(self, five_tuple: FiveTuple) -> Allocation | None:
        """The allocation of a 5-tuple, if any."""
        return self._by_tuple.get(five_tuple)

    def count(self, transport: str) -> int:
        """Allocations whose client uses ``transport``."""
        return self._by_transport.get(transport, 0)

    def user_count(self, key: str) -> int:
        """Allocations counted against quota key ``key``."""
        return self._per_user.get(key, 0)

    def users(self) -> Mapping[str, int]:
        """Allocations per quota key, for the keys that have any (a live view)."""
        return self._per_user

    def quota_exceeded(
        self, key: str, now: float = -math.inf, *, claiming: bytes | None = None, units: int = 1
    ) -> bool:
        """Whether a new allocation of quota key ``key`` gets 486; counts the refusal by
        reason in :attr:`refused`. Arguments as for :meth:`quota_refusal`."""
        reason = self.quota_refusal(key, now, claiming=claiming, units=units)
        if reason is None:
            return False
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return True

    def quota_refusal(
        self, key: str, now: float = -math.inf, *, claiming: bytes | None = None, units: int = 1
    ) -> str | None:
        """Which quota ``units`` more ports for quota key ``key`` (2 for an allocation that
        also reserves the next port) would break, if any. Live reservations count; the one
        being ``claiming`` (its own) does not. The relay's own quotas come first: they
        apply at once, the fleet's as of the scalers' last answers."""
        if self.total_quota or self.user_quota:
            held = [
                owner
                for token, (owner, expiry) in self._reservations.items()
                if expiry > now and token != claiming
            ]
            if self.total_quota and len(self._by_tuple) + len(held) + units > self.total_quota:
                return TOTAL_QUOTA
            mine = self.user_count(key) + held.count(key)
            if self.user_quota and mine + units > self.user_quota:
                return USER_QUOTA
        if self.fleet_refuses is not None and self.fleet_refuses(key):
            return FLEET_USER_QUOTA
        return None

    def reserved(self, token: bytes, key: str, expiry: float) -> None:
        """An EVEN-PORT reservation issued for ``key``, held until ``expiry`` or a claim."""
        self._reservations[token] = (key, expiry)

    def unreserved(self, token: bytes) -> None:
        """The reservation was claimed by an allocation (or released)."""
        self._reservations.pop(token, None)

    def expire_reservations(self, now: float) -> None:
        for token in [t for t, (_, expiry) in self._reservations.items() if expiry <= now]:
            del self._reservations[token]

    def next_deadline(self) -> float | None:
        """When the earliest heap entry falls due (None when there is nothing to expire)."""
        return self._heap[0][0] if self._heap else None

    @property
    def heap_size(self) -> int:
        """Entries in the expiry heap (about one per allocation)."""
        return len(self._heap)

    # -- changes

    def add(self, allocation: Allocation) -> Allocation:
        """Insert a new allocation (built by the caller); its 5-tuple must be free."""
        key = allocation.five_tuple
        if key in self._by_tuple:
            raise ValueError(f"5-tuple {key} already has an allocation")
        self._by_tuple[key] = allocation
        self._per_user[allocation.quota_key] = self._per_user.get(allocation.quota_key, 0) + 1
        transport = allocation.transport
        self._by_transport[transport] = self._by_transport.get(transport, 0) + 1
        self._schedule(allocation, allocation.expiry)
        return allocation

    def refresh(self, allocation: Allocation, lifetime: int, now: float) -> None:
        """Set the allocation to expire ``lifetime`` seconds after ``now``."""
        allocation.expiry = now + lifetime
        self._schedule(allocation, allocation.expiry)

    def remove(self, allocation: Allocation) -> bool:
        """Delete an allocation now; False if it was already gone. Its heap entry is skipped
        when it surfaces."""
        if allocation.removed:
            return False
        allocation.removed = True
        del self._by_tuple[allocation.five_tuple]
        key = allocation.quota_key
        left = self._per_user[key] - 1
        if left:
            self._per_user[key] = left
        else:
            del self._per_user[key]
        self._by_transport[allocation.transport] -= 1
        return True

    def add_permission(self, allocation: Allocation, peer_ip: str, now: float) -> None:
        """Install or refresh the permission for ``peer_ip`` (canonical text form)."""
        expiry = now + self.permission_lifetime
        allocation.permissions[peer_ip] = expiry
        self._schedule(allocation, expiry)

    def bind_channel(self, allocation: Allocation, channel: int, peer: Address, now: float) -> bool:
        """Bind or refresh ``channel`` <-> ``peer`` (and the peer's permission).

        False when the channel is bound to another peer or the peer to another channel
        (RFC 8656 §12.2: answer 400); nothing changes then.
        """
        by_channel = allocation.channels.get(channel)
        by_peer = allocation.peers.get(peer)
        if by_channel is not by_peer:
            return False
        expiry = now + self.channel_lifetime
        if by_channel is None:
            binding = Binding(channel, peer, expiry)
            allocation.channels[channel] = binding
            allocation.peers[peer] = binding
        else:
            by_channel.expiry = expiry
        self._schedule(allocation, expiry)
        self.add_permission(allocation, peer[0], now)
        return True

    def expire(self, now: float) -> list[Allocation]:
        """Remove what is due at ``now``: allocations past their lifetime are removed and
        returned; lapsed permissions and channels of the others are pruned, and lapsed
        reservations forgotten."""
        self.expire_reservations(now)
        expired: list[Allocation] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, allocation = heapq.heappop(heap)
            if allocation.removed or deadline != allocation.scheduled:
                continue  # superseded by an earlier entry, or already deleted
            allocation.scheduled = _NEVER
            if allocation.expiry <= now:
                self.remove(allocation)
                expired.append(allocation)
                continue
            self._schedule(allocation, self._prune(allocation, now))
        return expired

    def clear(self) -> list[Allocation]:
        """Remove and return every allocation (shutdown)."""
        every = list(self._by_tuple.values())
        for allocation in every:
            self.remove(allocation)
        self._heap.clear()
        return every

    # -- internals

    def _schedule(self, allocation: Allocation, deadline: float) -> None:
        if deadline < allocation.scheduled:
            allocation.scheduled = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), allocation))

    @staticmethod
    def _prune(allocation: Allocation, now: float) -> float:
        """Drop lapsed permissions and channels; return the allocation's next deadline."""
        deadline = allocation.expiry
        permissions = allocation.permissions
        for ip in [ip for ip, expiry in permissions.items() if expiry <= now]:
            del permissions[ip]
        if permissions:
            deadline = min(deadline, *permissions.values())
        channels = allocation.channels
        for binding in [b for b in channels.values() if b.expiry <= now]:
            del channels[binding.channel]
            del allocation.peers[binding.peer]
        if channels:
            deadline = min(deadline, *(b.expiry for b in channels.values()))
        return deadline
