"""How many datagrams (or connections) one readable event reads, for the batch loops of the
UDP and DTLS listeners, the relayed sockets and the TLS listener's accepts.

A loop that reads until the socket is empty ends every event with a ``recvfrom_into`` that
fails with EAGAIN: a system call for nothing and a ``BlockingIOError`` whose message Python
builds (``strerror``, a locale decode). Under a paced load, one datagram per event, that is
one system call in four and about 4k instructions per event. Readiness is level-triggered
(epoll as uvloop and asyncio use it): a socket with datagrams left is reported again at the
loop's next poll, so reading fewer than are queued delays them by one loop iteration and
loses nothing.

So a socket whose events carry one datagram each reads one and stops (quiet); every
:data:`PROBE_EVERY` quiet events one event reads a whole :data:`relay.net.buffers.BATCH`,
and a socket that then has more than one datagram queued reads whole batches again (busy)
until a batch finds at most one.
"""

from __future__ import annotations

from typing import Final

from relay.net.buffers import BATCH

__all__ = ["PROBE_EVERY", "ReadBudget"]

#: Quiet events between two that read a whole batch to see whether datagrams queue up.
PROBE_EVERY: Final = 8


class ReadBudget:
    """One socket's read limit for its next readable event (:attr:`limit`), adjusted by
    what each event found (:meth:`spent`)."""

    __slots__ = ("_batch", "_quiet", "limit")

    def __init__(self, batch: int = BATCH) -> None:
        self._batch = batch
        #: Reads the next event makes at most.
        self.limit = batch
        self._quiet = 0

    def spent(self, read: int, emptied: bool) -> None:
        """After an event: ``read`` datagrams were read, and the last read found the socket
        empty (``emptied``) or the loop stopped at :attr:`limit`."""
        if self.limit == 1:
            self._quiet += 1
            if self._quiet >= PROBE_EVERY:
                self.limit = self._batch  # the next event looks for a queue
        elif emptied and read <= 1:
            self.limit = 1
            self._quiet = 0
