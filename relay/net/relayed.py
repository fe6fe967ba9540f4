"""Relayed transport addresses (RFC 8656 §2, §7): one UDP socket per allocation, in
``--relay-ports``, and the peer -> client half of the packet path.

:class:`RelaySockets` is the handler's :class:`relay.core.handler.RelayFactory`: it binds a
port from the :class:`relay.core.ports.PortPool` (trying another when another process holds
one), an even one for EVEN-PORT, and for EVEN-PORT with the R bit the next port too, held
under a RESERVATION-TOKEN for :data:`RESERVATION_LIFETIME` (§7.2). A relayed socket is opened
synchronously while the Allocate is answered (no task per allocation).

:class:`RelaySocket` is the allocation's :class:`relay.core.allocation.RelayEndpoint`. A
readable event reads up to :data:`relay.net.buffers.BATCH` datagrams (as many as its
:class:`relay.net.reads.ReadBudget` allows) into the process's relay buffer, at an offset
that leaves room for the header: data from a peer with a channel goes to the client as
ChannelData (§12.7), from a peer with only a permission as a Data indication
(§11.3), both written in front of the data so UDP clients get it without a copy (TCP clients
get one copy, as the transport may keep it). Data from a peer without a permission is counted
and dropped (§9).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from typing import Final

from relay.core.allocation import Address, Allocation
from relay.core.ports import PortPool
from relay.core.stats import RelayStats
from relay.net.buffers import RELAY, RELAY_OFFSET, RELAY_RX, RELAY_VIEW
from relay.net.reads import ReadBudget
from relay.net.sockets import bind_relayed, port_taken, set_dont_fragment
from relay.proto import turn
from relay.proto.channeldata import pack_header_into
from relay.proto.indication import write_header as write_data_indication
from relay.proto.indication import xor_peer_address, xor_peer_address_v4
from relay.proto.stun import FAMILY_IPV4, FAMILY_IPV6, PADDING

__all__ = ["RESERVATION_LIFETIME", "RelaySocket", "RelaySockets"]

#: How long the port after an EVEN-PORT (R bit) allocation stays reserved (RFC 8656 §7.2:
#: "approximately 30 seconds").
RESERVATION_LIFETIME: Final = turn.RESERVATION_LIFETIME
#: A peer's address as the socket reports it (IPv6: a 4-tuple).
PeerAddress = tuple[str, int] | tuple[str, int, int, int]
_randbytes = random.Random().randbytes


class RelaySocket:
    """An allocation's relayed transport address: one UDP socket in ``--relay-ports``."""

    __slots__ = (
        "_factory",
        "_loop",
        "_xor_cache",
        "address",
        "allocation",
        "port",
        "read_budget",
        "sendto",
        "sock",
        "stats",
    )

    def __init__(
        self,
        sock: socket.socket,
        port: int,
        factory: RelaySockets,
        loop: asyncio.AbstractEventLoop,
        stats: RelayStats,
    ) -> None:
        self.sock = sock
        self.sendto = sock.sendto
        host, bound = sock.getsockname()[:2]
        self.address: Address = (host, bound)
        self.port = port
        self.allocation: Allocation | None = None
        self.stats = stats
        self._factory = factory
        self._loop: asyncio.AbstractEventLoop | None = loop
        #: XOR-PEER-ADDRESS of recent IPv4 peers without a channel (Data indications).
        self._xor_cache: dict[PeerAddress, bytes] = {}
        self.read_budget = ReadBudget()

    def __repr__(self) -> str:
        return f"RelaySocket({self.address[0]}:{self.address[1]})"

    def attach(self, allocation: Allocation) -> None:
        """Start relaying peer data to ``allocation``'s client."""
        self.allocation = allocation
        if self._loop is not None:
            # The bound address tells the family (socket.family builds an enum per call).
            readable = self._readable_v6 if ":" in self.address[0] else self._readable_v4
            self._loop.add_reader(self.sock.fileno(), readable)

    def send(self, data: bytes, peer: Address) -> None:
        """A Send indication's data to ``peer``."""
        try:
            self.sendto(data, peer)
        except OSError:
            return
        size = len(data)
        self.stats.peer_tx += size
        if self.allocation is not None:
            self.allocation.peer_tx += size

    def close(self) -> None:
        if self._loop is not None:
            if self.allocation is not None:
                self._loop.remove_reader(self.sock.fileno())
            self._loop = None
            self.sock.close()
            self._factory.release(self.port)
        self.allocation = None

    def _readable_v4(self) -> None:
        self._drain(False)

    def _readable_v6(self) -> None:
        self._drain(True)

    def _drain(self, v6: bool) -> None:
        allocation = self.allocation
        if allocation is None:
            return
        recv = self.sock.recvfrom_into
        permissions = allocation.permissions
        peers = allocation.peers
        link = allocation.link
        udp = link.transport == "udp"
        # RFC 8656 §12.5: ChannelData is padded over TCP and TLS only, not over UDP or DTLS.
        unpadded = udp or link.transport == "dtls"
        client = allocation.client_addr
        send = link.sendto
        buf = RELAY
        view = RELAY_VIEW
        rx = RELAY_RX
        received = sent = 0  # added to the counters once per batch
        budget = self.read_budget
        read = limit = budget.limit
        emptied = False
        try:
            for attempt in range(limit):
                try:
                    size, addr = recv(rx)
                except (BlockingIOError, InterruptedError):
                    read, emptied = attempt, True
                    return
                except OSError:
                    continue
                received += size
                if addr[0] not in permissions:
                    continue
                binding = peers.get((addr[0], addr[1]) if v6 else addr)
                end = RELAY_OFFSET + size
                if binding is not None:
                    start = RELAY_OFFSET - 4
                    pack_header_into(buf, start, binding.channel, size)
                else:
                    start = self._data_indication(addr, size, v6)
                pad = -size & 3
                if pad and (binding is None or not unpadded):
                    buf[end : end + pad] = PADDING[pad]
                    end += pad
                try:
                    send(view[start:end], client)
                except OSError:
                    continue
                if udp:  # a TCP connection counts what it writes itself
                    sent += end - start
        finally:
            budget.spent(read, emptied)
            stats = self.stats
            stats.peer_rx += received
            allocation.peer_rx += received
            stats.client_tx += sent

    def _data_indication(self, addr: PeerAddress, size: int, v6: bool) -> int:
        """Write a Data indication header in front of the data; return where it starts."""
        transaction_id = _randbytes(12)
        if v6:
            attribute = xor_peer_address(addr[0], addr[1], transaction_id)
        else:
            attribute = self._xor_cache.get(addr) or self._xor_v4(addr)
        return write_data_indication(RELAY, RELAY_OFFSET, size, attribute, transaction_id)

    def _xor_v4(self, addr: PeerAddress) -> bytes:
        cache = self._xor_cache
        if len(cache) >= 64:
            cache.clear()
        attribute = cache[addr] = xor_peer_address_v4(addr[0], addr[1])
        return attribute


class RelaySockets:
    """Opens relayed sockets on ``address`` with ports from ``pool`` (the RelayFactory).

    Nothing is opened (every request gets None, so the client 508) until :meth:`start` gives
    the event loop that watches the sockets.
    """

    def __init__(
        self,
        address: str,
        pool: PortPool,
        stats: RelayStats,
        attempts: int = 16,
    ) -> None:
        self.address = address
        self.family = FAMILY_IPV6 if ":" in address else FAMILY_IPV4
        self.pool = pool
        self.stats = stats
        self.attempts = attempts
        self.loop: asyncio.AbstractEventLoop | None = None
        self.reservation_lifetime = RESERVATION_LIFETIME
        #: RESERVATION-TOKEN -> (bound socket, its port, expiry in monotonic seconds).
        self._reservations: dict[bytes, tuple[socket.socket, int, float]] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open sockets from now on, watched by ``loop``."""
        self.loop = loop

    def _socket(self, port: int, dont_fragment: bool) -> socket.socket:
        return bind_relayed(self.address, port, dont_fragment=dont_fragment)

    def open(self, family: int, *, even_port: bool, dont_fragment: bool) -> RelaySocket | None:
        """A bound relayed socket, or None when no port of the range could be bound."""
        loop = self.loop
        if loop is None or family != self.family:
            return None
        failed: set[int] = set()
        for _ in range(self.attempts):
            port = self.pool.acquire(even=even_port, avoid=frozenset(failed))
            if port is None:
                return None
            try:
                sock = self._socket(port, dont_fragment)
            except OSError as exc:
                self.pool.release(port)
                if not port_taken(exc):
                    return None
                failed.add(port)
                continue
            return RelaySocket(sock, port, self, loop, self.stats)
        return None

    def reserve_pair(
        self, family: int, *, dont_fragment: bool, now: float
    ) -> tuple[RelaySocket, bytes] | None:
        """A socket on an even port, and the next port bound and kept under a token."""
        loop = self.loop
        if loop is None or family != self.family:
            return None
        failed: set[int] = set()
        for _ in range(self.attempts):
            port = self.pool.acquire_pair(avoid=frozenset(failed))
            if port is None:
                return None
            try:
                sock = self._socket(port, dont_fragment)
            except OSError as exc:
                self.pool.release(port)
                self.pool.release(port + 1)
                if not port_taken(exc):
                    return None
                failed.add(port)
                continue
            try:
                reserved = self._socket(port + 1, False)
            except OSError as exc:
                sock.close()
                self.pool.release(port)
                self.pool.release(port + 1)
                if not port_taken(exc):
                    return None
                failed.add(port)
                continue
            token = os.urandom(8)
            self._reservations[token] = (reserved, port + 1, now + self.reservation_lifetime)
            return RelaySocket(sock, port, self, loop, self.stats), token
        return None

    def claim(
        self, token: bytes, family: int, *, dont_fragment: bool, now: float
    ) -> RelaySocket | None:
        """The socket reserved under ``token`` (once), or None."""
        entry = self._reservations.pop(token, None)
        if entry is None:
            return None
        sock, port, expiry = entry
        loop = self.loop
        if loop is None or expiry <= now or family != self.family:
            sock.close()
            self.pool.release(port)
            return None
        if dont_fragment:
            set_dont_fragment(sock)
        return RelaySocket(sock, port, self, loop, self.stats)

    def expire_reservations(self, now: float) -> int:
        """Release reservations nobody claimed in time; returns how many."""
        due = [token for token, (_, _, expiry) in self._reservations.items() if expiry <= now]
        for token in due:
            sock, port, _ = self._reservations.pop(token)
            sock.close()
            self.pool.release(port)
        return len(due)

    def close(self) -> None:
        """Release every reservation (shutdown)."""
        self.expire_reservations(float("inf"))

    def release(self, port: int) -> None:
        self.pool.release(port)
