"""A TURN listener on UDP (RFC 8656 §5, §12): STUN to the request handler, ChannelData from
clients straight to their peers (§12.6).

The socket is non-blocking and watched with ``loop.add_reader``; a readable event reads up to
:data:`relay.net.buffers.BATCH` datagrams (as many as :class:`relay.net.reads.ReadBudget`
allows) with ``recvfrom_into`` into the process's one listener buffer. ChannelData (the
first byte 0x40..0x4F, or up to 0x7F for RFC 5766 channels) from a client with an
allocation goes to its peer as a slice of that buffer, without a copy and without a log
line; STUN (first byte below 0x40, RFC 8656 §12) goes to the handler and its answer back
to the client.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from relay.core.allocation import Address, Allocation, ClientAddress
from relay.core.handler import RequestHandler
from relay.core.stats import RelayStats
from relay.net.buffers import LISTENER, LISTENER_VIEW
from relay.net.bugs import report_bug
from relay.net.reads import ReadBudget
from relay.proto import stun
from relay.proto.channeldata import unpack_header
from relay.proto.stun import StunError

__all__ = ["UdpListener"]


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
        self.read_budget = ReadBudget()

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
        buf = LISTENER
        view = LISTENER_VIEW
        clients = self.clients
        high = self.channel_high
        received = relayed = 0  # added to the stats once per batch
        budget = self.read_budget
        read = limit = budget.limit
        emptied = False
        try:
            for attempt in range(limit):
                try:
                    size, addr = recv(view)
                except (BlockingIOError, InterruptedError):
                    read, emptied = attempt, True
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
                    channel, length = unpack_header(buf)
                    end = 4 + length
                    if end > size:  # bytes after the data (padding) are ignored
                        continue
                    binding = allocation.channels.get(channel)
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
            budget.spent(read, emptied)
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
