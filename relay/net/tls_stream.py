"""One server-side TLS connection on a non-blocking socket (RFC 8656 §3.1, TURN over TLS):
its handshake, then an :class:`asyncio.Transport` for the TURN protocol over it.

The standard :mod:`ssl` module does the TLS through memory BIOs (``SSLContext.wrap_bio``),
driven straight from the event loop's reader callback: one ``recv_into`` takes everything
the socket has (:data:`relay.net.buffers.TLS`, several records), OpenSSL gets it, and each
record's plaintext goes to the protocol; a write is encrypted into the outgoing BIO and sent
with one ``send``. Per connection there is no task, future or coroutine and no TLS state
machine in Python: the handshake is a ``do_handshake`` per flight received. Against uvloop's
own TLS layer (also memory BIOs) that is fewer Python calls per record and per handshake;
against OpenSSL reading the socket itself (socket BIOs) it is one ``recv`` per readable
event instead of two per record (Python's ``ssl`` has no read-ahead).

A handshake must finish within its deadline; one that fails or times out is reported to
``on_done`` and the socket closed (after the alert OpenSSL wrote, if any), nothing else is
held. Encrypted bytes the socket does not take are kept in order and sent when it is
writable; over :data:`HIGH_WATER` bytes kept the protocol is told to pause writing
(``pause_writing``), at :data:`LOW_WATER` or below to resume. ``close`` sends what is kept and
a close_notify (RFC 8446 §6.1; the peer's is not awaited), then closes the socket; ``abort``
closes it at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any, Final

from relay.net.buffers import TLS, TLS_VIEW

__all__ = ["HIGH_WATER", "LOW_WATER", "READ_SIZE", "TlsStream"]

#: Bytes one ``read`` of plaintext asks for: more than a record's (16 KiB, RFC 8446 §5.1).
READ_SIZE: Final = 65536
#: Bytes kept unsent above which the protocol pauses writing, and at or below which it resumes.
HIGH_WATER: Final = 64 * 1024
LOW_WATER: Final = 16 * 1024

_RECEIVE_SIZE: Final = len(TLS)
_WANT_READ = ssl.SSLWantReadError


class TlsStream(asyncio.Transport):
    """A TLS connection from the accepted ``sock`` (non-blocking) to ``protocol_factory``'s
    protocol: the handshake first, within ``timeout`` seconds; then the transport.

    ``on_done(stream, ok, error)`` is called once, when the handshake ends (``ok``), fails
    (not ``ok``, with the error) or is aborted (not ``ok``, no error); the socket is closed by
    then unless ``ok``. The protocol is made only after a
    completed handshake, and its ``connection_lost`` is called once, at the loop's next
    iteration after the connection ends."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        peer: tuple[Any, ...],
        timeout: float,
        on_done: Callable[[TlsStream, bool, Exception | None], None],
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._factory = protocol_factory
        self._on_done: Callable[[TlsStream, bool, Exception | None], None] | None = on_done
        self._protocol: asyncio.Protocol | None = None
        self._extra: dict[str, Any] = {"peername": peer, "socket": sock}
        #: Encrypted bytes the socket has not taken yet, in order.
        self._unsent: collections.deque[bytes] = collections.deque()
        self._unsent_size = 0
        self._paused = False  # the protocol was told to pause writing
        self._closing = False
        self._closed = False
        self._writing = False
        self._deadline: asyncio.TimerHandle | None = loop.call_later(timeout, self._expired)
        loop.add_reader(self._fd, self._readable)
        self._reading = True

    # -- reading

    def _readable(self) -> None:
        """The socket has bytes: all of them (up to a buffer) to OpenSSL, then the handshake's
        next step or each record's plaintext to the protocol."""
        try:
            size = self._sock.recv_into(TLS, _RECEIVE_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not size:  # the peer's FIN, with or without a close_notify first
            self._lost(None)
            return
        self._incoming.write(TLS_VIEW[:size])
        if self._protocol is None and not self._handshake():
            return
        self._records()

    def _handshake(self) -> bool:
        """The handshake's next flight (RFC 8446 §2, RFC 5246 §7.3); whether it is done."""
        try:
            self._tls.do_handshake()
        except _WANT_READ:
            self._send_outgoing()
            return False
        except (ssl.SSLError, OSError) as exc:  # garbage, an old version, no common cipher
            self._send_outgoing()  # the alert
            self._abort(exc)
            return False
        try:
            self._extra["sockname"] = self._sock.getsockname()
        except OSError as exc:
            self._abort(exc)
            return False
        self._cancel_deadline()
        self._done(True, None)
        self._extra["ssl_object"] = self._tls
        self._send_outgoing()  # the server's last flight, and TLS 1.3's ticket
        protocol = self._protocol = self._factory()
        protocol.connection_made(self)
        return not self._closing

    def _records(self) -> None:
        """Each whole record OpenSSL has: its plaintext to the protocol."""
        protocol = self._protocol
        assert protocol is not None
        tls, incoming = self._tls, self._incoming
        # A read takes a whole record's plaintext (at most 16 KiB, under READ_SIZE), so
        # nothing waits inside OpenSSL once the incoming BIO is empty.
        while incoming.pending:
            try:
                data = tls.read(READ_SIZE)
            except _WANT_READ:
                break  # the rest of a record is still on its way
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                data = b""
            except ssl.SSLError as exc:  # a bad record MAC, a record too long
                self._send_outgoing()  # the alert
                self._abort(exc)
                return
            if not data:  # close_notify (RFC 8446 §6.1)
                self._eof(protocol)
                return
            protocol.data_received(data)
            if self._closing:
                return
        if self._outgoing.pending:
            self._send_outgoing()  # what reading wrote (the warning refusing a renegotiation)

    def _lost(self, exc: Exception | None) -> None:
        """The socket is at its end (``exc``: reset or failed)."""
        if self._protocol is None:
            self._abort(exc or ConnectionResetError("closed during the tls handshake"))
        elif exc is None:
            self._eof(self._protocol)
        else:
            self._abort(exc)

    def _eof(self, protocol: asyncio.Protocol) -> None:
        self._stop_reading()
        keep_open = protocol.eof_received()
        if not keep_open:
            self.close()

    # -- the handshake's deadline

    def _expired(self) -> None:
        self._deadline = None
        self._abort(TimeoutError("tls handshake timed out"))

    def _done(self, ok: bool, exc: Exception | None) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self, ok, exc)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # -- writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            self._abort(exc)
            return
        self._send_outgoing()

    def _send_outgoing(self) -> None:
        """Send what OpenSSL wrote to the outgoing BIO, after what is kept unsent."""
        data = self._outgoing.read()
        if not data or self._closed:
            return
        if not self._unsent:
            sent = self._send(data)
            if sent is None or sent == len(data):
                return
            data = data[sent:]
            self._loop.add_writer(self._fd, self._writable)
            self._writing = True
        self._unsent.append(data)
        self._unsent_size += len(data)
        protocol = self._protocol
        if not self._paused and self._unsent_size > HIGH_WATER and protocol is not None:
            self._paused = True
            protocol.pause_writing()

    def _writable(self) -> None:
        """Send what is kept, joined (one ``send``); the rest waits for the next time."""
        unsent = self._unsent
        data = unsent[0] if len(unsent) == 1 else b"".join(unsent)
        unsent.clear()
        sent = self._send(data)
        if sent is None:
            return
        if sent < len(data):
            unsent.append(data[sent:])
        self._unsent_size = len(data) - sent
        protocol = self._protocol
        if self._paused and self._unsent_size <= LOW_WATER and protocol is not None:
            self._paused = False
            protocol.resume_writing()
        if self._unsent_size:
            return
        self._stop_writing()
        if self._closing:
            self._abort(None)  # all sent, the close_notify last

    def _send(self, data: bytes) -> int | None:
        """One ``send``: the bytes the socket took, or None when it failed (then aborted)."""
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._abort(exc)
            return None

    def get_write_buffer_size(self) -> int:
        return self._unsent_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return LOW_WATER, HIGH_WATER

    # -- ending

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what is kept and a close_notify, then close the socket."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        # The close_notify, into the outgoing BIO. SSLWantReadError: the peer's close_notify
        # is not awaited.
        with contextlib.suppress(ssl.SSLError, OSError):
            self._tls.unwrap()
        self._send_outgoing()
        if not self._unsent:
            self._abort(None)

    def abort(self) -> None:
        self._abort(None)

    def _abort(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._cancel_deadline()
        self._stop_reading()
        self._stop_writing()
        self._unsent.clear()
        self._unsent_size = 0
        self._sock.close()
        if self._on_done is not None:  # during the handshake
            self._done(False, exc)
        if self._protocol is not None:
            self._loop.call_soon(self._protocol.connection_lost, exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def __repr__(self) -> str:
        return f"TlsStream(fd={self._fd}, peer={self._extra['peername']!r})"

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _stop_writing(self) -> None:
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
