"""TURN over DTLS 1.2 over UDP (RFC 8656 §3.1 and §7 transports; RFC 6347; ``turns:`` over
DTLS, RFC 7350): a listener socket shared by one DTLS session per client 5-tuple.

All cryptography is OpenSSL's, through pyOpenSSL with memory BIOs
(``Connection(context, None)``, ``bio_write``/``bio_read``); the listener moves datagrams.

* **Cookie exchange first** (RFC 6347 §4.2.1): a datagram from a source without a session
  must be an epoch-0 ClientHello (:func:`relay.net.dtls_records.is_client_hello`), else it is
  dropped and counted. It goes through ``DTLSv1_listen`` on the listener's one listening
  connection (reused from hello to hello): without a
  valid cookie (:class:`relay.net.dtls_cookies.CookieJar`, an HMAC over the source address
  and port) the answer is a HelloVerifyRequest, sent only if it is no larger than the
  ClientHello (no amplification), and nothing is kept. Only a ClientHello that returns a
  valid cookie, so a source that receives at its address, gets a :class:`DtlsSession`.
* **Handshakes are bounded**: sessions in handshake are capped per source IP and in total
  (a :class:`relay.core.admission.TcpAdmission`, the TLS handshake limits), retransmitted
  on OpenSSL's timer (``DTLSv1_get_timeout``/``DTLSv1_handle_timeout``) and dropped at the
  handshake deadline (``--tls-handshake-timeout``), counted as failures.
* **After the handshake** a session is its client's
  :class:`relay.core.allocation.ClientLink`: each record carries what a UDP datagram would
  (STUN, or ChannelData without padding, RFC 8656 §12.5), through the same handler (auth,
  peer policy, quotas, drain), counted under transport ``dtls``. Established sessions
  without an allocation are capped like TCP connections without one (the same admission),
  and closed after :data:`relay.net.tcp.TCP_IDLE_TIMEOUT` idle by the server's sweep. A
  close_notify or a fatal alert ends the session (and its allocation, reason ``error``).
  A new ClientHello with a valid cookie from the address of an established session (a
  client restarted on the same port, RFC 6347 §4.2.8) replaces it.

The context new handshakes get comes from :class:`relay.net.tls.TlsContexts` (the
``--tls-cert``/``--tls-key`` pair, reloaded when the files change); a session keeps the
context it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Final

from OpenSSL import SSL

from relay.core import certs
from relay.core.admission import TcpAdmission
from relay.core.allocation import Address, Allocation, ClientAddress, Payload
from relay.core.certs import LoadedPair
from relay.core.handler import RequestHandler
from relay.core.stats import RelayStats
from relay.net.buffers import LISTENER_VIEW
from relay.net.bugs import report_bug
from relay.net.dtls_cookies import CookieJar
from relay.net.dtls_io import (
    PLAINTEXT_MAX,
    PublicRecords,
    Records,
    SessionEnded,
    records_for,
)
from relay.net.dtls_records import (
    APPLICATION_DATA,
    HEADER_SIZE,
    datagrams,
    is_client_hello,
    scan,
)
from relay.net.forward import channel_data_to_peer
from relay.net.reads import ReadBudget
from relay.net.tcp import TCP_IDLE_TIMEOUT
from relay.net.tls import TlsContexts
from relay.proto import stun
from relay.proto.stun import StunError
from scaler.common import logs

__all__ = ["DTLS_MTU", "DtlsListener", "DtlsSession"]

log = logs.get("relay")

#: The largest datagram a handshake flight is cut into (OpenSSL fragments handshake messages
#: to fit, RFC 6347 §4.2.3): safe on any path that carries WebRTC media.
DTLS_MTU: Final = 1200
#: A ClientHello larger than this is not looked at (DTLS 1.2 ones are a few hundred bytes).
_HELLO_MAX: Final = 4096
#: What one ``bio_read`` of a handshake flight asks for: a whole flight (a few KiB even
#: with a long chain) in one read.
_DRAIN_CHUNK: Final = 65536
#: Reads one drain makes at most.
_DRAIN_READS: Final = 64


def _drain(connection: SSL.Connection) -> bytes:
    """Everything OpenSSL has written to the connection's outgoing memory BIO.

    A memory BIO hands over all it holds up to the size asked, so a read shorter than
    :data:`_DRAIN_CHUNK` is all there was: one ``bio_read`` per flight, and no
    ``WantReadError`` raised to find the end (only when nothing was written at all)."""
    try:
        out = connection.bio_read(_DRAIN_CHUNK)
    except SSL.WantReadError:
        return b""
    if len(out) < _DRAIN_CHUNK:
        return out
    parts = [out]
    for _ in range(_DRAIN_READS):  # what is left after these goes with the next flush
        try:
            out = connection.bio_read(_DRAIN_CHUNK)
        except SSL.WantReadError:
            break
        parts.append(out)
        if len(out) < _DRAIN_CHUNK:
            break
    return b"".join(parts)


class DtlsSession:
    """One client's DTLS association on a listener, and once established its
    :class:`relay.core.allocation.ClientLink` (at most one allocation, its 5-tuple)."""

    transport = "dtls"

    __slots__ = (
        "_sendto",
        "_timer",
        "addr",
        "allocation",
        "channel_high",
        "connection",
        "deadline",
        "established",
        "idle_since",
        "listener",
        "local",
        "pending",
        "records",
        "stats",
    )

    def __init__(
        self, listener: DtlsListener, connection: SSL.Connection, addr: ClientAddress, now: float
    ) -> None:
        self.listener = listener
        self.connection = connection
        self.addr = addr
        self.local: Address = listener.local
        # What every message uses, kept here rather than looked up through the listener.
        self.stats = listener.stats
        self.channel_high = listener.channel_high
        self._sendto = listener.sendto
        self.established = False
        #: Counted as pending by the listener's admission (established, no allocation).
        self.pending = False
        self.allocation: Allocation | None = None
        #: Monotonic time since when the session has had no allocation (None: it has one).
        self.idle_since: float | None = now
        #: Monotonic time the handshake must be done by.
        self.deadline = now + listener.timeout
        self._timer: asyncio.TimerHandle | None = None
        #: Application data in and out, once established (:mod:`relay.net.dtls_io`).
        self.records: Records = PublicRecords(connection)

    def __repr__(self) -> str:
        state = "established" if self.established else "handshake"
        return f"DtlsSession({self.addr!r} -> {self.local[0]}:{self.local[1]}, {state})"

    # -- datagrams from the client

    def datagram(self, data: memoryview) -> None:
        """One datagram from this session's address."""
        size = len(data)
        if (
            self.established
            and size > HEADER_SIZE
            and data[0] == APPLICATION_DATA
            and HEADER_SIZE + (data[11] << 8 | data[12]) == size
        ):
            # The common case, one record of media: no scan, no loop, no look-up of the
            # session again (nothing follows the one message).
            try:
                plain = self.records.open(data)
            except SessionEnded as ended:
                self._ended(ended)
                return
            if plain is not None:  # None: a record OpenSSL discarded
                self._message(plain)
            return
        self._records(data)

    def _records(self, data: memoryview) -> None:
        """A datagram of several records, or one in handshake, or not application data."""
        count, only_data = scan(data)
        if not count:
            self.listener.garbage += 1  # not DTLS records: OpenSSL never sees it
            return
        if self.established and not only_data and is_client_hello(data):
            self.listener.hello(data, self.addr, replacing=self)
            return
        connection = self.connection
        connection.bio_write(data)
        if not self.established:
            self.advance()
            return
        sessions = self.listener.sessions
        for _ in range(count):
            try:
                plain = connection.recv(PLAINTEXT_MAX)
            except SSL.WantReadError:
                break  # a record OpenSSL discarded (a bad MAC, a replay: RFC 6347 §4.1.2.6)
            except SSL.Error as exc:
                self._failed(exc)
                return
            self._message(plain)
            if sessions.get(self.addr) is not self:
                return  # closed while handling (a listener closed by a request)
        if not only_data:
            self._flush()  # e.g. the last flight again, for a client that lost it

    def _failed(self, exc: SSL.Error) -> None:
        """``recv`` ended the session: the client's close_notify or a fatal alert (RFC 5246
        §7.2.1, §7.2.2), or a broken record layer."""
        self._ended(SessionEnded(isinstance(exc, SSL.ZeroReturnError), repr(exc)))

    def _ended(self, ended: SessionEnded) -> None:
        if not ended.clean:
            log.debug("dtls session failed", client=str(self.addr), error=str(ended))
        self.close(notify=False)

    def _message(self, plain: bytes | memoryview) -> None:
        """One record's plaintext: what a UDP datagram carries (RFC 8656 §12.5)."""
        if len(plain) < 4:
            return
        first = plain[0]
        if 0x40 <= first <= self.channel_high:
            channel_data_to_peer(self.allocation, plain, self.stats)
        elif first < 0x40:
            self._stun(plain)

    def _stun(self, plain: bytes | memoryview) -> None:
        """A STUN message (RFC 8489 §5): through the handler as from a UDP client."""
        if not stun.is_stun(plain):
            return
        try:
            message = stun.parse(plain)
        except StunError:
            return  # malformed: dropped
        listener = self.listener
        try:
            response = listener.handler.handle(
                message, self, self.addr, listener.clock(), listener.wall()
            )
        except Exception:
            report_bug("dtls")
            return
        if response is not None:
            self.sendto(response, self.addr)

    # -- the handshake

    def advance(self) -> None:
        """Take the handshake as far as the datagrams so far allow."""
        try:
            self.connection.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._schedule()
            return
        except SSL.Error as exc:
            self._flush()  # the alert, if OpenSSL wrote one
            self.listener.handshake_failed(self, repr(exc))
            return
        self._flush()
        self._cancel_timer()
        self.listener.handshake_done(self)

    def _schedule(self) -> None:
        """Wake up at OpenSSL's retransmission time (RFC 6347 §4.2.4) or the deadline."""
        self._cancel_timer()
        loop = self.listener.loop
        if loop is None:
            return
        delay = self.deadline - self.listener.clock()
        retransmit = self.connection.DTLSv1_get_timeout()
        if retransmit is not None:
            delay = min(delay, retransmit)
        self._timer = loop.call_later(max(0.0, delay), self._wake)

    def _wake(self) -> None:
        self._timer = None
        if self.established or self.listener.sessions.get(self.addr) is not self:
            return
        if self.listener.clock() >= self.deadline:
            self.listener.handshake_failed(self, "handshake deadline")
            return
        try:
            self.connection.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self.listener.handshake_failed(self, repr(exc))
            return
        self._flush()
        self._schedule()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        out = _drain(self.connection)
        if out:
            for datagram in datagrams(out, DTLS_MTU):
                self.listener.send(datagram, self.addr)

    # -- relay.core.allocation.ClientLink

    def attach(self, allocation: Allocation) -> None:
        self.allocation = allocation
        self.idle_since = None
        self.listener.set_pending(self, False)

    def detach(self, allocation: Allocation) -> None:
        if self.allocation is allocation:
            self.allocation = None
            self.idle_since = self.listener.clock()
            self.listener.set_pending(self, self.listener.sessions.get(self.addr) is self)

    def sendto(self, data: Payload, client: ClientAddress, /) -> None:
        """One message to the client in one record (ChannelData, a Data indication, a STUN
        answer); dropped when the session cannot send. Counts what it sends."""
        out = self.records.seal(data)
        if out is None:
            return
        try:
            self._sendto(out, self.addr)
        except OSError:
            return
        self.stats.client_tx += len(out)

    # -- the end

    def close(self, *, notify: bool = True) -> None:
        """End the session (a close_notify first unless the client ended it), its allocation
        with it (reason ``error``, as a closed TCP connection)."""
        self._cancel_timer()
        if notify and self.established:
            with contextlib.suppress(SSL.Error):
                self.connection.shutdown()
            self._flush()
        self.listener.forget(self)
        allocation = self.allocation
        if allocation is not None:
            self.listener.handler.delete(allocation, "error")


class DtlsListener:
    """A ``dtls://`` listener: one UDP socket, the cookie exchange, and the sessions on it.
    Like :class:`relay.net.udp.UdpListener` it reads in batches on ``add_reader``, as many
    datagrams per event as its :class:`relay.net.reads.ReadBudget` allows."""

    transport = "dtls"
    #: Application data through OpenSSL's functions directly (:mod:`relay.net.dtls_io`);
    #: False: through pyOpenSSL's public methods.
    direct_records = True

    def __init__(
        self,
        sock: socket.socket,
        contexts: TlsContexts,
        handler: RequestHandler,
        stats: RelayStats,
        *,
        cookies: CookieJar,
        handshakes: TcpAdmission,
        admission: TcpAdmission,
        timeout: float,
        on_failure: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        idle_timeout: float = TCP_IDLE_TIMEOUT,
    ) -> None:
        self.sock = sock
        self.sendto = sock.sendto
        host, port = sock.getsockname()[:2]
        self.local: Address = (host, port)
        self.contexts = contexts
        self.handler = handler
        self.stats = stats
        self.cookies = cookies
        #: Sessions in handshake, by source IP (the TLS handshake limits).
        self.handshakes = handshakes
        #: Established sessions without an allocation (the TCP pending-connection limits).
        self.admission = admission
        self.timeout = timeout
        self.on_failure = on_failure
        self.clock = clock
        self.wall = wall
        self.idle_timeout = idle_timeout
        self.channel_high = handler.channel_max >> 8
        #: One session per client address (the 5-tuple's client half on this socket).
        self.sessions: dict[ClientAddress, DtlsSession] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        # Counters shown on /status.
        self.hello_verify_requests = 0
        self.handshakes_completed = 0
        self.handshake_failures = 0
        self.refused = 0
        self.garbage = 0
        self._context: tuple[LoadedPair, SSL.Context] | None = None
        self._listener: SSL.Connection | None = None
        self.read_budget = ReadBudget()

    def __repr__(self) -> str:
        return f"DtlsListener({self.local[0]}:{self.local[1]}, sessions={len(self.sessions)})"

    @property
    def handshaking(self) -> int:
        """Sessions whose handshake is in progress."""
        return sum(1 for session in self.sessions.values() if not session.established)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        """End every session (close_notify; their allocations end, reason ``drained``) and
        close the socket."""
        for session in list(self.sessions.values()):
            allocation = session.allocation
            if allocation is not None:
                self.handler.delete(allocation, "drained")
            session.close()
        if self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.loop = None
        self.sock.close()

    def status(self) -> dict[str, int]:
        return {
            "sessions": len(self.sessions),
            "handshaking": self.handshaking,
            "handshakes": self.handshakes_completed,
            "handshake_failures": self.handshake_failures,
            "hello_verify_requests": self.hello_verify_requests,
            "refused": self.refused,
            "dropped_datagrams": self.garbage,
        }

    # -- datagrams

    def _readable(self) -> None:
        recv = self.sock.recvfrom_into
        view = LISTENER_VIEW
        sessions = self.sessions
        received = 0  # added to the stats once per batch
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
                    continue  # e.g. an ICMP error queued on the socket
                received += size
                session = sessions.get(addr)
                try:
                    if session is not None:
                        session.datagram(view[:size])
                    else:
                        self.hello(view[:size], addr)
                except Exception:
                    report_bug("dtls")
                if self.loop is None:
                    return  # closed while handling
        finally:
            budget.spent(read, emptied)
            self.stats.client_rx += received

    def send(self, data: bytes, addr: ClientAddress) -> None:
        try:
            self.sendto(data, addr)
        except OSError:
            return
        self.stats.client_tx += len(data)

    def hello(
        self, data: memoryview, addr: ClientAddress, *, replacing: DtlsSession | None = None
    ) -> None:
        """A datagram from a source without a session (or a new ClientHello on an established
        one): a HelloVerifyRequest without state, or a new session for a valid cookie."""
        if len(data) > _HELLO_MAX or not is_client_hello(data):
            self.garbage += 1
            return
        connection = self._listening()
        connection.set_app_data(addr)
        try:
            connection.bio_write(data)
            connection.DTLSv1_listen()
        except SSL.WantReadError:
            # Still listening, the datagram consumed: the HelloVerifyRequest, if it was a
            # ClientHello without a valid cookie. The same connection serves the next hello.
            reply = _drain(connection)
            if reply and len(reply) <= len(data):
                self.hello_verify_requests += 1
                self.send(reply, addr)
            elif not reply:
                self.garbage += 1
            return
        except SSL.Error as exc:
            self._listener = None  # in an unknown state: the next hello gets a fresh one
            self.garbage += 1
            log.debug("dtls hello dropped", client=str(addr), error=repr(exc))
            return
        self._listener = None  # it becomes this client's session
        # The cookie is valid: the source receives at ``addr``.
        if replacing is not None:
            replacing.close(notify=False)
        if not self.handshakes.admit(addr[0]):
            self.refused += 1
            self.handshake_failures += 1
            self.on_failure()
            return
        session = DtlsSession(self, connection, addr, self.clock())
        self.sessions[addr] = session
        session.advance()  # DTLSv1_listen kept the ClientHello: the ServerHello flight

    def _listening(self) -> SSL.Connection:
        """The connection hellos go through (``DTLSv1_listen``): one per listener, reused
        until a valid cookie makes it a session, and new when the pair changed, so a hello
        costs no new OpenSSL object (and a flood no memory)."""
        pair = self.contexts.current
        cached = self._context
        if cached is None or cached[0] is not pair:
            context = certs.dtls_context(
                pair, cookie_generate=self._cookie, cookie_verify=self._cookie_valid
            )
            cached = self._context = (pair, context)
            self._listener = None
        if self._listener is None:
            connection = SSL.Connection(cached[1], None)
            connection.set_ciphertext_mtu(DTLS_MTU)
            self._listener = connection
        return self._listener

    def _cookie(self, connection: SSL.Connection) -> bytes:
        return self.cookies.cookie(connection.get_app_data())

    def _cookie_valid(self, connection: SSL.Connection, cookie: bytes) -> bool:
        return self.cookies.valid(connection.get_app_data(), cookie)

    # -- what sessions tell the listener

    def handshake_done(self, session: DtlsSession) -> None:
        session.established = True
        session.records = records_for(session.connection, direct=self.direct_records)
        self.handshakes.release(session.addr[0])
        self.handshakes_completed += 1
        if not self.admission.admit(session.addr[0]):
            self.refused += 1  # too many sessions without an allocation: ended at once
            session.close()
            return
        session.pending = True
        self.stats.connection_accepted("dtls")

    def handshake_failed(self, session: DtlsSession, why: str) -> None:
        self.handshake_failures += 1
        self.on_failure()
        log.debug("dtls handshake failed", client=str(session.addr), error=why)
        session.close(notify=False)

    def set_pending(self, session: DtlsSession, pending: bool) -> None:
        if pending is session.pending:
            return
        session.pending = pending
        if pending:
            self.admission.add(session.addr[0])
        else:
            self.admission.release(session.addr[0])

    def forget(self, session: DtlsSession) -> None:
        """Drop ``session`` from the table and release what it was counted as."""
        if self.sessions.get(session.addr) is session:
            del self.sessions[session.addr]
            if not session.established:
                self.handshakes.release(session.addr[0])
            self.set_pending(session, False)

    def sweep(self, now: float) -> None:
        """Close sessions idle without an allocation for the idle timeout."""
        timeout = self.idle_timeout
        for session in list(self.sessions.values()):
            since = session.idle_since
            if session.established and since is not None and now - since > timeout:
                session.close()
