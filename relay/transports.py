"""The relay's sockets: TURN listeners (UDP, TCP) and relayed UDP sockets, on asyncio.

Thin by design: demultiplex, move bytes, hand STUN to :class:`relay.core.handler.RequestHandler`.
The data path (ChannelData both ways, Data indications to clients) stays here, written to
allocate as little as possible and to never log:

* UDP sockets (listeners and relayed sockets) are non-blocking sockets watched with
  ``loop.add_reader``; a readable event drains up to :data:`BATCH` datagrams with
  ``recvfrom_into`` into one preallocated buffer. A relayed socket is therefore opened
  synchronously while the Allocate is answered (no task per allocation).
* Client -> peer ChannelData is sent straight from the receive buffer (a memoryview slice).
* Peer -> client data is received at an offset in the buffer, leaving room to write the
  ChannelData or Data indication header in front of it, so the message is sent without
  copying (UDP clients; TCP clients get one copy, as the transport may keep it).
* TCP clients: one :class:`TcpConnection` (an ``asyncio.Protocol``) per connection, split
  into frames by :class:`relay.proto.framing.StreamDeframer`. A connection whose send buffer is
  over the high-water mark drops relayed data (as UDP would) instead of buffering without
  bound. Garbage on the stream closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from relay.core.allocation import Address, Allocation, ClientAddress, Payload
from relay.core.ports import PortPool
from relay.core.stats import RelayStats
from relay.proto import stun
from relay.proto.framing import StreamDeframer
from relay.proto.stun import FAMILY_IPV4, FAMILY_IPV6, StunError
from scaler.common import logs, sockets

if TYPE_CHECKING:
    from relay.core.handler import RequestHandler

log = logs.get("relay")

__all__ = [
    "BATCH",
    "RelaySocket",
    "RelaySockets",
    "TcpConnection",
    "UdpListener",
    "bind_udp",
    "report_bug",
]

#: Datagrams read per readable event before yielding to the loop.
BATCH: Final = 64
#: Bytes a UDP datagram can carry, plus room for the largest header we prepend.
_MAX_DATAGRAM: Final = 65536
#: Where peer data lands in the relay buffer: room for a Data indication header in front
#: (20 STUN header + 24 XOR-PEER-ADDRESS (IPv6) + 4 DATA header).
_OFFSET: Final = 48
_PAD: Final = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")
#: Socket buffer sizes asked for (the kernel caps them at net.core.[rw]mem_max).
LISTENER_BUFFER: Final = 4 << 20
#: For each relayed socket: room for a burst from the peer (kernel memory, used on demand).
RELAYED_BUFFER: Final = 512 << 10
_HEADER = struct.Struct("!HH")
_STUN_HEADER = struct.Struct("!HHI12s")
_XOR4 = struct.Struct("!HHBBHI")
#: Data indication message type: method 0x007, class indication.
_DATA_INDICATION: Final = 0x0017
_XOR_PEER_ADDRESS: Final = 0x0012
_DATA_ATTRIBUTE: Final = 0x0013
_COOKIE: Final = stun.MAGIC_COOKIE
# IP_MTU_DISCOVER / IP_PMTUDISC_DO and the IPv6 twins (Linux values; not in the socket module).
_IP_MTU_DISCOVER: Final = 10
_IPV6_MTU_DISCOVER: Final = 23
_PMTUDISC_DO: Final = 2
#: How long the port after an EVEN-PORT (R bit) allocation stays reserved (RFC 8656 §7.2:
#: "approximately 30 seconds").
RESERVATION_LIFETIME: Final = 30.0
#: TCP connections without an allocation are closed after this long.
TCP_IDLE_TIMEOUT: Final = 60.0
_LINUX = sys.platform.startswith("linux")

# One receive buffer per direction for the whole process: every read is handled completely
# before the next one, on the loop's only thread.
_relay_buffer = bytearray(_OFFSET + _MAX_DATAGRAM + 4)
_relay_view = memoryview(_relay_buffer)
_relay_rx = _relay_view[_OFFSET : _OFFSET + _MAX_DATAGRAM]
_listener_buffer = bytearray(_MAX_DATAGRAM)
_listener_view = memoryview(_listener_buffer)
_randbytes = random.Random().randbytes


_last_bug_report = 0.0


def report_bug(where: str) -> None:
    """Log an unexpected exception from request handling, at most once a second (a packet
    that triggers a bug must not turn into a log flood); the packet is dropped."""
    global _last_bug_report  # noqa: PLW0603 - one process-wide rate limit
    now = time.monotonic()
    if now - _last_bug_report >= 1.0:
        _last_bug_report = now
        log.exception("request handling failed; packet dropped", where=where)


def _grow_buffers(sock: socket.socket, size: int = LISTENER_BUFFER) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def _set_dont_fragment(sock: socket.socket) -> None:
    """Send with the DF bit (DONT-FRAGMENT, RFC 8656 §14.9); Linux only, best effort."""
    if not _LINUX:
        return
    if sock.family == socket.AF_INET6:
        level, option = socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER
    else:
        level, option = socket.IPPROTO_IP, _IP_MTU_DISCOVER
    with contextlib.suppress(OSError):
        sock.setsockopt(level, option, _PMTUDISC_DO)


def _port_taken(exc: OSError) -> bool:
    return exc.errno in (errno.EADDRINUSE, errno.EACCES)


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (port 0 picks one)."""
    sock = sockets.bind_udp(host, port)
    try:
        _grow_buffers(sock)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpListener:
    """A TURN listener on UDP: STUN to the handler, ChannelData straight to the peer. The
    :class:`relay.core.allocation.ClientLink` of every UDP client on it."""

    transport = "udp"

    def __init__(
        self,
        sock: socket.socket,
        handler: RequestHandler,
        stats: RelayStats,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.sock = sock
        self.sendto = sock.sendto
        host, port = sock.getsockname()[:2]
        self.local: Address = (host, port)
        self.handler = handler
        self.stats = stats
        self.clock = clock
        self.wall = wall
        #: Client address as the socket reports it -> its allocation (the data-path index).
        self.clients: dict[ClientAddress, Allocation] = {}
        #: The highest first byte of a ChannelData message (0x4F, or 0x7F for RFC 5766).
        self.channel_high = handler.channel_max >> 8
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"UdpListener({self.local[0]}:{self.local[1]})"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()

    def attach(self, allocation: Allocation) -> None:
        self.clients[allocation.client_addr] = allocation

    def detach(self, allocation: Allocation) -> None:
        if self.clients.get(allocation.client_addr) is allocation:
            del self.clients[allocation.client_addr]

    def _readable(self) -> None:
        recv = self.sock.recvfrom_into
        buf = _listener_buffer
        view = _listener_view
        clients = self.clients
        high = self.channel_high
        received = relayed = 0  # added to the stats once per batch
        try:
            for _ in range(BATCH):
                try:
                    size, addr = recv(view)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    continue  # e.g. an ICMP error queued on the socket: the next read works
                received += size
                if size < 4:
                    continue
                first = buf[0]
                if 0x40 <= first <= high:
                    allocation = clients.get(addr)
                    if allocation is None:
                        continue
                    end = 4 + ((buf[2] << 8) | buf[3])
                    if end > size:
                        continue
                    binding = allocation.channels.get((first << 8) | buf[1])
                    if binding is None:
                        continue
                    try:
                        allocation.relay.sendto(view[4:end], binding.peer)
                    except OSError:
                        continue
                    end -= 4
                    allocation.peer_tx += end
                    relayed += end
                elif first < 0x40:
                    self._stun(view[:size], addr)
        finally:
            stats = self.stats
            stats.client_rx += received
            stats.peer_tx += relayed

    def _stun(self, data: memoryview, addr: ClientAddress) -> None:
        if not stun.is_stun(data):
            return
        try:
            message = stun.parse(data)
        except StunError:
            return  # malformed: dropped
        try:
            response = self.handler.handle(message, self, addr, self.clock(), self.wall())
        except Exception:
            report_bug("udp")
            return
        if response is not None:
            try:
                self.sendto(response, addr)
            except OSError:
                return
            self.stats.client_tx += len(response)


class TcpConnection(asyncio.Protocol):
    """One TURN client over TCP, its :class:`relay.core.allocation.ClientLink`. At most one
    allocation per connection (its 5-tuple)."""

    transport = "tcp"

    def __init__(
        self,
        handler: RequestHandler,
        stats: RelayStats,
        connections: set[TcpConnection],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.handler = handler
        self.stats = stats
        self.connections = connections
        self.clock = clock
        self.wall = wall
        self.local: Address = ("", 0)
        self.peer: ClientAddress = ("", 0)
        self.allocation: Allocation | None = None
        #: Monotonic time since when the connection has had no allocation (None: it has one).
        self.idle_since: float | None = clock()
        self.paused = False
        self._transport: asyncio.Transport | None = None
        self._deframer = StreamDeframer(channel_max=handler.channel_max)

    def __repr__(self) -> str:
        return f"TcpConnection({self.peer!r} -> {self.local[0]}:{self.local[1]})"

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections.add(self)
        self.stats.connection_accepted("tcp")

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._transport = None
        allocation = self.allocation
        if allocation is not None:
            self.handler.delete(allocation, "error")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        self.stats.client_rx += len(data)
        try:
            frames = self._deframer.feed(data)
        except StunError:
            self.close()  # not TURN, or lost sync: nothing after this can be trusted
            return
        for frame in frames:
            if self._transport is None:
                return
            if frame[0] >= 0x40:
                self._channel_data(frame)
                continue
            try:
                message = stun.parse(frame)
            except StunError:
                self.close()
                return
            try:
                response = self.handler.handle(message, self, self.peer, self.clock(), self.wall())
            except Exception:
                report_bug("tcp")
                continue
            if response is not None:
                self.write(response)

    # -- link

    def attach(self, allocation: Allocation) -> None:
        self.allocation = allocation
        self.idle_since = None

    def detach(self, allocation: Allocation) -> None:
        if self.allocation is allocation:
            self.allocation = None
            self.idle_since = self.clock()

    def sendto(self, data: Payload, client: ClientAddress, /) -> None:
        """What the packet path sends to this connection's client: a copy (the transport may
        keep it), written as :meth:`write` does."""
        self.write(bytes(data))

    def write(self, data: bytes) -> None:
        """Send to the client unless the connection is backed up (then the data is dropped)."""
        transport = self._transport
        if transport is None or self.paused:
            return
        transport.write(data)
        self.stats.client_tx += len(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _channel_data(self, frame: bytes) -> None:
        allocation = self.allocation
        if allocation is None:
            return
        end = 4 + ((frame[2] << 8) | frame[3])
        binding = allocation.channels.get((frame[0] << 8) | frame[1])
        if binding is None:
            return
        try:
            allocation.relay.sendto(memoryview(frame)[4:end], binding.peer)
        except OSError:
            return
        end -= 4
        allocation.peer_tx += end
        self.stats.peer_tx += end


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
        buf = _relay_buffer
        view = _relay_view
        rx = _relay_rx
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
                end = _OFFSET + size
                if binding is not None:
                    start = _OFFSET - 4
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
        buf = _relay_buffer
        transaction_id = _randbytes(12)
        if not v6:
            attribute = self._xor_cache.get(addr)
            if attribute is None:
                attribute = self._xor4(addr)
            start = _OFFSET - 36
        else:
            value = stun.encode_xor_address(addr[0], addr[1], transaction_id)
            attribute = _HEADER.pack(_XOR_PEER_ADDRESS, len(value)) + value
            start = _OFFSET - 48
        length = len(attribute) + 4 + size + (-size & 3)
        _STUN_HEADER.pack_into(buf, start, _DATA_INDICATION, length, _COOKIE, transaction_id)
        at = start + 20
        buf[at : at + len(attribute)] = attribute
        _HEADER.pack_into(buf, _OFFSET - 4, _DATA_ATTRIBUTE, size)
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
    """Opens relayed sockets on ``address`` with ports from ``pool`` (the RelayFactory)."""

    def __init__(
        self,
        address: str,
        pool: PortPool,
        loop: asyncio.AbstractEventLoop,
        stats: RelayStats,
        attempts: int = 16,
    ) -> None:
        self.address = address
        self.family = FAMILY_IPV6 if ":" in address else FAMILY_IPV4
        self.pool = pool
        self.loop = loop
        self.stats = stats
        self.attempts = attempts
        #: Ports another process held when we tried them (counted for diagnostics).
        self.bind_failures = 0
        self.reservation_lifetime = RESERVATION_LIFETIME
        #: RESERVATION-TOKEN -> (bound socket, its port, expiry in monotonic seconds).
        self._reservations: dict[bytes, tuple[socket.socket, int, float]] = {}

    def _socket(self, port: int, dont_fragment: bool) -> socket.socket:
        sock = sockets.bind_udp(self.address, port)
        try:
            _grow_buffers(sock, RELAYED_BUFFER)
            if dont_fragment:
                _set_dont_fragment(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def open(self, family: int, *, even_port: bool, dont_fragment: bool) -> RelaySocket | None:
        """A bound relayed socket, or None when no port of the range could be bound."""
        if family != self.family:
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
                if not _port_taken(exc):
                    return None
                self.bind_failures += 1
                failed.add(port)
                continue
            return RelaySocket(sock, port, self, self.loop, self.stats)
        return None

    def reserve_pair(
        self, family: int, *, dont_fragment: bool, now: float
    ) -> tuple[RelaySocket, bytes] | None:
        """A socket on an even port, and the next port bound and kept under a token."""
        if family != self.family:
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
                if not _port_taken(exc):
                    return None
                self.bind_failures += 1
                failed.add(port)
                continue
            try:
                reserved = self._socket(port + 1, False)
            except OSError as exc:
                sock.close()
                self.pool.release(port)
                self.pool.release(port + 1)
                if not _port_taken(exc):
                    return None
                self.bind_failures += 1
                failed.add(port)
                continue
            token = os.urandom(8)
            self._reservations[token] = (reserved, port + 1, now + self.reservation_lifetime)
            return RelaySocket(sock, port, self, self.loop, self.stats), token
        return None

    def claim(
        self, token: bytes, family: int, *, dont_fragment: bool, now: float
    ) -> RelaySocket | None:
        """The socket reserved under ``token`` (once), or None."""
        entry = self._reservations.pop(token, None)
        if entry is None:
            return None
        sock, port, expiry = entry
        if expiry <= now or family != self.family:
            sock.close()
            self.pool.release(port)
            return None
        if dont_fragment:
            _set_dont_fragment(sock)
        return RelaySocket(sock, port, self, self.loop, self.stats)

    @property
    def reservations(self) -> int:
        """Ports held under a RESERVATION-TOKEN now."""
        return len(self._reservations)

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
