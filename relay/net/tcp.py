"""One TURN client over TCP (RFC 8656 §2.1: TCP between client and server): an
``asyncio.Protocol``.

The stream is split into STUN messages (RFC 8489 §6.2.2) and padded ChannelData messages
(RFC 8656 §12.5) by :class:`relay.proto.framing.StreamDeframer`; garbage on it closes the
connection. ChannelData goes to the allocation's peer, STUN to the request handler. A
connection whose send buffer is over the high-water mark drops relayed data (as UDP would)
instead of buffering without bound. A connection without an allocation is closed after
:data:`TCP_IDLE_TIMEOUT` (by the server's sweep).

Before it has an allocation a connection is held to what an Allocate needs (RFC 8656 §17,
resource exhaustion by unauthenticated clients): frames of at most
:data:`PENDING_MAX_FRAME_SIZE` bytes (a longer one closes it), a frame started (or the first
one) must be complete within :data:`PENDING_FRAME_TIMEOUT` (:meth:`TcpConnection.stalled`,
closed by the sweep), and :class:`relay.core.admission.TcpAdmission` caps such connections
per source IP and in total (over them a new connection is closed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import ClassVar, Final, cast

from relay.core.admission import TcpAdmission
from relay.core.allocation import Address, Allocation, ClientAddress, Payload
from relay.core.handler import RequestHandler
from relay.core.stats import RelayStats
from relay.net.bugs import report_bug
from relay.net.forward import channel_data_to_peer
from relay.proto import stun
from relay.proto.framing import DEFAULT_MAX_FRAME_SIZE, StreamDeframer
from relay.proto.stun import StunError

__all__ = [
    "PENDING_FRAME_TIMEOUT",
    "PENDING_MAX_FRAME_SIZE",
    "TCP_CLOSE_GRACE",
    "TCP_IDLE_TIMEOUT",
    "TcpConnection",
]

#: TCP connections without an allocation are closed after this long.
TCP_IDLE_TIMEOUT: Final = 60.0
#: Seconds a closing connection has to send what it still holds (the transport's close waits
#: for that); after it the connection is aborted, since a client that stopped reading would
#: otherwise keep it, its descriptor and its buffers for good.
TCP_CLOSE_GRACE: Final = 5.0
#: Largest frame a connection without an allocation may send: an Allocate with the longest
#: USERNAME (513 bytes), our REALM (under 509) and NONCE (32) and every other attribute fits.
PENDING_MAX_FRAME_SIZE: Final = 2048
#: Seconds a connection without an allocation has to complete a frame it started (or its
#: first one): a slow-loris client holding a partial frame is closed after it.
PENDING_FRAME_TIMEOUT: Final = 5.0


class TcpConnection(asyncio.Protocol):
    """One TURN client over TCP, its :class:`relay.core.allocation.ClientLink`. At most one
    allocation per connection (its 5-tuple)."""

    transport = "tcp"
    #: Whether :meth:`connection_made` turns Nagle's algorithm off (a TLS listener's
    #: accepted sockets inherit TCP_NODELAY from the listening socket instead).
    set_nodelay: ClassVar[bool] = True

    def __init__(
        self,
        handler: RequestHandler,
        stats: RelayStats,
        connections: set[TcpConnection],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        *,
        admission: TcpAdmission | None = None,
    ) -> None:
        self.handler = handler
        self.admission = admission
        #: Counted as pending by ``admission`` (accepted, no allocation).
        self.pending = False
        self.stats = stats
        self.connections = connections
        self.clock = clock
        self.wall = wall
        self.local: Address = ("", 0)
        self.peer: ClientAddress = ("", 0)
        self.allocation: Allocation | None = None
        #: Monotonic time since when the connection has had no allocation (None: it has one).
        self.idle_since: float | None = clock()
        #: Monotonic time since when a frame is awaited: the connect (the first frame), or the
        #: read that started the partial frame buffered now; None when nothing is pending.
        self.waiting_since: float | None = self.idle_since
        self.paused = False
        #: Monotonic time of the first close (None: not closing): see :meth:`overdue`.
        self.closing_since: float | None = None
        self._transport: asyncio.Transport | None = None
        self._deframer = StreamDeframer(PENDING_MAX_FRAME_SIZE, channel_max=handler.channel_max)

    def __repr__(self) -> str:
        return f"TcpConnection({self.peer!r} -> {self.local[0]}:{self.local[1]})"

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])
        if self.admission is not None:
            if not self.admission.admit(self.peer[0]):
                self._transport.abort()  # over the pending limits: closed before any read
                return
            self.pending = True
        if self.set_nodelay:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections.add(self)
        self.stats.connection_accepted(self.transport)

    def eof_received(self) -> bool:
        """The client ended its half (its FIN; over TLS with or without a close_notify): the
        connection closes through :meth:`close`, so a client that also reads nothing is
        aborted after the grace instead of holding it until its allocation expires."""
        self.close()
        return True  # the transport is closing already: it must not close itself again

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._transport = None
        self._set_pending(False)
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
        if not self._deframer.buffered:
            self.waiting_since = None
        elif frames or self.waiting_since is None:
            self.waiting_since = self.clock()
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
        self._deframer.max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self._set_pending(False)

    def detach(self, allocation: Allocation) -> None:
        if self.allocation is allocation:
            self.allocation = None
            self.idle_since = self.clock()
            self._deframer.max_frame_size = PENDING_MAX_FRAME_SIZE
            self._set_pending(self._transport is not None)

    def stalled(self, now: float, timeout: float = PENDING_FRAME_TIMEOUT) -> bool:
        """Whether this connection has no allocation and has not completed its first frame,
        or one it started, within ``timeout`` seconds."""
        since = self.waiting_since
        return self.allocation is None and since is not None and now - since > timeout

    def _set_pending(self, pending: bool) -> None:
        admission = self.admission
        if admission is None or pending is self.pending:
            return
        self.pending = pending
        if pending:
            admission.add(self.peer[0])
        else:
            admission.release(self.peer[0])

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
        """End the connection once what it holds is sent (within :data:`TCP_CLOSE_GRACE`)."""
        if self._transport is not None:
            if self.closing_since is None:
                self.closing_since = self.clock()
            self._transport.close()

    def overdue(self, now: float, grace: float = TCP_CLOSE_GRACE) -> bool:
        """Whether this connection was closed more than ``grace`` seconds ago and is still
        there: its client is not taking what is left to send."""
        since = self.closing_since
        return since is not None and now - since > grace

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _channel_data(self, frame: bytes) -> None:
        channel_data_to_peer(self.allocation, frame, self.stats)
