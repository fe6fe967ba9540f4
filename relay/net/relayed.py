"""Relayed transport addresses (RFC 8656 §2, §7): one UDP socket per allocation, in
``--relay-ports``, and the peer -> client half of the packet path.

:class:`RelaySockets` is the handler's :class:`relay.core.handler.RelayFactory`: it binds a
port from the :class:`relay.core.ports.PortPool` (trying another when another process holds
one), an even one for EVEN-PORT, and for EVEN-PORT with the R bit the next port too, held
under a RESERVATION-TOKEN for :data:`RESERVATION_LIFETIME` (§7.2). A relayed socket is opened
synchronously while the Allocate is answered (no task per allocation).

:class:`RelaySocket` is the allocation's :class:`relay.core.allocation.RelayEndpoint`. A
readable event drains up to :data:`relay.net.buffers.BATCH` datagrams into the process's relay
buffer, at an offset that leaves room for the header: data from a peer with a channel goes to
the client as ChannelData (§12.4), from a peer with only a permission as a Data indication
(§11.4), both written in front of the data so UDP clients get it without a copy (TCP clients
get one copy, as the transport may keep it). Data from a peer without a permission is counted
and dropped (§9).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from typing import Any, Final

from relay.core.allocation import Address, Allocation
from relay.core.ports import PortPool
from relay.core.stats import RelayStats
from relay.net.buffers import BATCH, RELAY, RELAY_OFFSET, RELAY_RX, RELAY_VIEW
from relay.net.sockets import bind_relayed, port_taken, set_dont_fragment
from relay.proto import stun
from relay.proto.stun import FAMILY_IPV4, FAMILY_IPV6

__all__ = ["RESERVATION_LIFETIME", "RelaySocket", "RelaySockets"]

#: How long the port after an EVEN-PORT (R bit) allocation stays reserved (RFC 8656 §7.2:
#: "approximately 30 seconds").
RESERVATION_LIFETIME: Final = 30.0
_PAD: Final = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")
_HEADER = struct.Struct("!HH")
_STUN_HEADER = struct.Struct("!HHI12s")
_XOR4 = struct.Struct("!HHBBHI")
#: Data indication message type: method 0x007, class indication.
_DATA_INDICATION: Final = 0x0017
_XOR_PEER_ADDRESS: Final = 0x0012
_DATA_ATTRIBUTE: Final = 0x0013
_COOKIE: Final = stun.MAGIC_COOKIE
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
        self._xor_cache: dict[Address, bytes] = {}

    def __repr__(self) -> str:
        return f"RelaySocket({self.address[0]}:{self.address[1]})"

    def attach(self, allocation: Allocation) -> None:
        """Start relaying peer data to ``allocation``'s client."""
        self.allocation = allocation
        if self._loop is not None:
            if self.sock.family == socket.AF_INET:
                self._loop.add_reader(self.sock.fileno(), self._readable_v4)
            else:
                self._loop.add_reader(self.sock.fileno(), self._readable_v6)

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
        client = allocation.client_addr
        send = link.sendto
        buf = RELAY
        view = RELAY_VIEW
        rx = RELAY_RX
        received = sent = 0  # added to the counters once per batch
        try:
            for _ in range(BATCH):
                try:
                    size, addr = recv(rx)
                except (BlockingIOError, InterruptedError):
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
                    _HEADER.pack_into(buf, start, binding.channel, size)
                else:
                    start = self._data_indication(addr, size, v6)
                pad = -size & 3
                if pad and (binding is None or not udp):
                    buf[end : end + pad] = _PAD[pad]
                    end += pad
                try:
                    send(view[start:end], client)
                except OSError:
                    continue
                if udp:  # a TCP connection counts what it writes itself
                    sent += end - start
        finally:
            stats = self.stats
            stats.peer_rx += received
            allocation.peer_rx += received
            stats.client_tx += sent

    def _data_indication(self, addr: Any, size: int, v6: bool) -> int:
        """Write a Data indication header in front of the data; return where it starts."""
        buf = RELAY
        transaction_id = _randbytes(12)
        if not v6:
            attribute = self._xor_cache.get(addr)
            if attribute is None:
                attribute = self._xor4(addr)
            start = RELAY_OFFSET - 36
        else:
            value = stun.encode_xor_address(addr[0], addr[1], transaction_id)
            attribute = _HEADER.pack(_XOR_PEER_ADDRESS, len(value)) + value
            start = RELAY_OFFSET - 48
        length = len(attribute) + 4 + size + (-size & 3)
        _STUN_HEADER.pack_into(buf, start, _DATA_INDICATION, length, _COOKIE, transaction_id)
        at = start + 20
        buf[at : at + len(attribute)] = attribute
        _HEADER.pack_into(buf, RELAY_OFFSET - 4, _DATA_ATTRIBUTE, size)
        return start

    def _xor4(self, addr: Address) -> bytes:
        cache = self._xor_cache
        if len(cache) >= 64:
            cache.clear()
        packed = int.from_bytes(socket.inet_aton(addr[0]), "big")
        attribute = _XOR4.pack(
            _XOR_PEER_ADDRESS, 8, 0, FAMILY_IPV4, addr[1] ^ (_COOKIE >> 16), packed ^ _COOKIE
        )
        cache[addr] = attribute
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
