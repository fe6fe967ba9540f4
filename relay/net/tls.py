"""TURN over TLS over TCP (RFC 8656 §3.1; ``turns:`` URIs, RFC 7065; ALPN ``stun.turn``,
RFC 7443): the handshake in front of a :class:`relay.net.tcp.TcpConnection`, and the task
that reloads the certificate when its files change.

A ``tls://`` listener (:class:`TlsListener`) accepts TCP connections and hands each socket
to a :class:`relay.net.tls_stream.TlsStream` (the standard ``ssl`` module through memory
BIOs, server side, with the context in use at that moment and a handshake deadline). Once
the handshake is done the
connection is a :class:`TlsConnection`: exactly what TCP carries (STUN, padded ChannelData,
the same auth, policy, quotas and drain), counted under transport ``tls``. A handshake that
fails (garbage instead of a ClientHello, a client that never finishes, a protocol version
below TLS 1.2) closes the connection, adds one to
:attr:`relay.core.stats.RelayStats.tls_handshake_failures` and logs at debug only.

:class:`TlsContexts` holds the pair in use. :meth:`TlsContexts.watch` polls the files every
few seconds (:func:`relay.core.certs.poll`: path behind symlinks, inode, size, mtime); a new
valid pair becomes a NEW context for new handshakes, connections keep theirs. A bad pair
(unreadable, key mismatch, expired) is refused with one warning and the old one stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from collections.abc import Callable
from typing import Final, cast

from relay.core import certs
from relay.core.admission import TcpAdmission
from relay.core.certs import CertError, LoadedPair, TlsFiles
from relay.net.reads import ReadBudget
from relay.net.tcp import TcpConnection
from relay.net.tls_stream import TlsStream
from scaler.common import logs

__all__ = ["TLS_POLL_INTERVAL", "TlsConnection", "TlsContexts", "TlsListener"]

log = logs.get("relay")

#: Seconds between two looks at the certificate files.
TLS_POLL_INTERVAL: Final = 5.0
#: Connections one readiness callback accepts at most (the rest wait for the next one).
ACCEPT_BATCH: Final = 32
#: Seconds accepting pauses after an accept error (EMFILE: out of descriptors).
ACCEPT_RETRY: Final = 0.1


class TlsConnection(TcpConnection):
    """One TURN client over TLS: a TCP client whose transport is ``tls``."""

    transport = "tls"
    set_nodelay = False  # inherited from the listening socket (TlsListener)

    def __repr__(self) -> str:
        return f"TlsConnection({self.peer!r} -> {self.local[0]}:{self.local[1]})"


class TlsContexts:
    """The pair new handshakes get, and its reloading."""

    def __init__(
        self,
        files: TlsFiles,
        *,
        poll_interval: float = TLS_POLL_INTERVAL,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.files = files
        self.poll_interval = poll_interval
        self.wall = wall
        seen = certs.stamp(files)
        #: Raises CertError: the caller turns it into a start-up error.
        self.current: LoadedPair = certs.load_pair(files, wall())
        self._watch = certs.CertWatch(seen)
        self.reloads = 0
        self.refusals = 0

    def check(self) -> None:
        """One poll: load a changed pair, or refuse it with one warning."""
        outcome = certs.poll(self._watch, self.files, self.wall())
        if outcome is None:
            return
        if isinstance(outcome, CertError):
            self.refusals += 1
            log.warning(
                "tls certificate change refused, the previous one stays in use",
                error=str(outcome),
                fingerprint_sha256=self.current.info.fingerprint_sha256,
            )
            return
        old = self.current.info
        self.current = outcome
        self.reloads += 1
        log.info(
            "tls certificate reloaded",
            subject=outcome.info.subject,
            not_after=outcome.info.status()["not_after"],
            fingerprint_sha256=outcome.info.fingerprint_sha256,
            previous_fingerprint_sha256=old.fingerprint_sha256,
        )

    async def watch(self) -> None:
        """Poll forever (a task; cancel it to stop)."""
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.check()
            except Exception:  # keep the pair in use whatever a poll did
                log.exception("tls certificate poll failed")

    def status(self) -> dict[str, object]:
        return {
            **self.current.info.status(),
            "cert_file": str(self.files.cert),
            "key_file": str(self.files.key),
            "reloads": self.reloads,
            "reloads_refused": self.refusals,
        }


def _peer_ip(address: object) -> str:
    """The source IP of what ``accept`` returned (a (host, port, ...) tuple for TCP)."""
    return str(address[0]) if isinstance(address, tuple) and address else ""


class TlsListener:
    """A ``tls://`` listener: accepts TCP connections and runs each TLS handshake in a
    :class:`relay.net.tls_stream.TlsStream` with the context in use at accept time and the
    handshake deadline. Like :class:`asyncio.Server`, it has
    :meth:`close` and :meth:`wait_closed`; established connections outlive :meth:`close`
    (the server aborts them at shutdown).

    Accepting is a reader callback on the listening socket (registered once), not a task
    awaiting ``sock_accept``: no future, no task wake-up and no poller change per
    connection, and the handshake starts in the same callback. A callback
    accepts at most :data:`ACCEPT_BATCH` connections, so a flood of them cannot starve
    established connections, and while they come one at a time it accepts one and stops
    (:class:`relay.net.reads.ReadBudget`): no failed ``accept`` per connection."""

    def __init__(
        self,
        sock: socket.socket,
        contexts: TlsContexts,
        connection: Callable[[], TlsConnection],
        *,
        timeout: float,
        on_failure: Callable[[], None],
        admission: TcpAdmission | None = None,
    ) -> None:
        self.sock = sock
        # Handshakes in progress, by source IP: bounded like connections without an
        # allocation, so a stranger cannot hold sockets by starting handshakes it never ends.
        self.admission = admission
        self.contexts = contexts
        self.connection = connection
        self.timeout = timeout
        self.on_failure = on_failure
        self.sock.setblocking(False)
        # Accepted sockets inherit TCP_NODELAY (Linux): set once here, not per connection.
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The reader is registered (False: not started, paused after an error, or closed).
        self._reading = False
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._handshakes: set[TlsStream] = set()
        #: One accept per event while connections come one at a time (no failed accept).
        self.accept_budget = ReadBudget(ACCEPT_BATCH)

    @property
    def handshakes(self) -> int:
        """Handshakes in progress."""
        return len(self._handshakes)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._resume()

    def close(self) -> None:
        """Stop accepting and abort the handshakes in progress."""
        for stream in list(self._handshakes):
            stream.abort()
        if self._closed:
            return
        self._closed = True
        self._pause()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.sock.close()

    async def wait_closed(self) -> None:
        for stream in list(self._handshakes):
            stream.abort()

    def _resume(self) -> None:
        self._retry = None
        loop = self._loop
        if loop is None or self._closed or self._reading:
            return
        loop.add_reader(self.sock.fileno(), self._accept)
        self._reading = True

    def _pause(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self._reading = False

    def _accept(self) -> None:
        """The listening socket is readable: accept what is queued (at most a batch)."""
        loop = self._loop
        assert loop is not None
        budget = self.accept_budget
        accepted = limit = budget.limit
        emptied = False
        try:
            for attempt in range(limit):
                try:
                    client, address = self.sock.accept()
                except (BlockingIOError, InterruptedError):
                    accepted, emptied = attempt, True
                    return  # nothing more queued
                except OSError as exc:  # EMFILE and the like: try again a little later
                    log.debug("tls accept failed", error=repr(exc))
                    self._pause()
                    self._retry = loop.call_later(ACCEPT_RETRY, self._resume)
                    return
                self._start(loop, client, address)
        finally:
            budget.spent(accepted, emptied)

    def _start(
        self, loop: asyncio.AbstractEventLoop, client: socket.socket, address: object
    ) -> None:
        """An accepted connection: admitted (or closed at once), then its handshake."""
        # accept() already returned the peer: no getpeername() per connection.
        ip = _peer_ip(address)
        if self.admission is not None and not self.admission.admit(ip):
            self.on_failure()
            client.close()  # over the handshake limits: closed before any read
            return
        client.setblocking(False)
        stream = TlsStream(
            loop,
            client,
            self.contexts.current.context,
            self.connection,
            peer=cast(tuple[object, ...], address),
            timeout=self.timeout,
            on_done=functools.partial(self._handshake_done, ip),
        )
        self._handshakes.add(stream)

    def _handshake_done(
        self, ip: str, stream: TlsStream, ok: bool, error: Exception | None
    ) -> None:
        """A handshake ended: out of the count; a failure is counted and logged at debug
        (an abort by :meth:`close`, with no error, is neither)."""
        self._handshakes.discard(stream)
        if self.admission is not None:
            self.admission.release(ip)
        if not ok and error is not None:  # garbage, a timeout, a reset, an old version
            self.on_failure()
            log.debug("tls handshake failed", client=ip, error=repr(error))
