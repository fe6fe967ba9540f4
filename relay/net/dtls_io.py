"""Application data of an established DTLS session (RFC 6347 §4.1): a record from the client
opened into its plaintext, a message to the client sealed into one record.

This is the relay's per-packet DTLS work: four OpenSSL calls per echoed message
(``BIO_write`` and ``SSL_read`` in, ``SSL_write`` and ``BIO_read`` out). Around each of them
pyOpenSSL's methods allocate a buffer, copy the result out of it and run their error checks,
which costs about as much as OpenSSL's own work on a small record. :class:`DirectRecords`
calls the same four functions through the binding pyOpenSSL itself is built on (the ``ffi``
and ``lib`` of cryptography's ``hazmat.bindings.openssl``, the very same objects), on the
connection's own SSL object and memory BIOs. Two buffers serve every session, since a
plaintext or a record is handed on before the next one is made on the loop's only
thread. So nothing is allocated or copied per packet.

The connection's SSL object and BIOs are pyOpenSSL's private attributes. If a pyOpenSSL
release lacks them, :class:`PublicRecords` does the same through its public methods, with
the same results. Handshakes, alerts and shutdown stay with pyOpenSSL.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL

__all__ = [
    "PLAINTEXT_MAX",
    "RECORD_MAX",
    "DirectRecords",
    "PublicRecords",
    "Records",
    "SessionEnded",
    "records_for",
]

_binding = Binding()
_ffi: Final[Any] = _binding.ffi
_lib: Final[Any] = _binding.lib

#: The largest plaintext a DTLS 1.2 record carries (2^14, RFC 6347 §4.1 by RFC 5246 §6.2.1).
PLAINTEXT_MAX: Final = 16384
#: A sealed record of the largest plaintext, with room for any cipher's overhead.
RECORD_MAX: Final = PLAINTEXT_MAX + 2048

# The buffers every DirectRecords reads into (never resized: OpenSSL holds their address).
_PLAINTEXT: Final = bytearray(PLAINTEXT_MAX)
_PLAINTEXT_VIEW: Final = memoryview(_PLAINTEXT)
_PLAINTEXT_POINTER: Final = _ffi.from_buffer(_PLAINTEXT)
_RECORD: Final = bytearray(RECORD_MAX)
_RECORD_VIEW: Final = memoryview(_RECORD)
_RECORD_POINTER: Final = _ffi.from_buffer(_RECORD)

#: The pyOpenSSL attributes :class:`DirectRecords` needs.
_POINTERS: Final = ("_ssl", "_into_ssl", "_from_ssl")


class SessionEnded(Exception):
    """A record ended the session: the client's close_notify (``clean``), or a fatal alert
    or a broken record layer (RFC 5246 §7.2.1, §7.2.2)."""

    def __init__(self, clean: bool, reason: str) -> None:
        super().__init__(reason)
        self.clean = clean


class Records(Protocol):
    """One established session's application data."""

    def open(self, record: Any) -> bytes | memoryview | None:
        """The plaintext of one record from the client, or None for a record OpenSSL
        discarded (a bad MAC, a replay: RFC 6347 §4.1.2.6). Raises :class:`SessionEnded`.
        A view is valid until the next :meth:`open` of any session."""

    def seal(self, message: Any) -> bytes | memoryview | None:
        """The one record carrying ``message`` to the client, or None when the session
        cannot send. A view is valid until the next :meth:`seal` of any session."""


class DirectRecords:
    """:class:`Records` through OpenSSL's functions on the connection's own objects."""

    __slots__ = ("_into", "_out", "_ssl")

    def __init__(self, connection: SSL.Connection) -> None:
        self._ssl = connection._ssl
        self._into = connection._into_ssl
        self._out = connection._from_ssl

    def open(self, record: Any) -> memoryview | None:
        size = len(record)
        if _lib.BIO_write(self._into, _ffi.from_buffer(record), size) != size:
            _lib.ERR_clear_error()
            return None
        read = _lib.SSL_read(self._ssl, _PLAINTEXT_POINTER, PLAINTEXT_MAX)
        if read > 0:
            return _PLAINTEXT_VIEW[:read]
        error = _lib.SSL_get_error(self._ssl, read)
        code = _lib.ERR_get_error()
        _lib.ERR_clear_error()  # nothing left behind for the next call on this thread
        if error == _lib.SSL_ERROR_WANT_READ:
            return None
        if error == _lib.SSL_ERROR_ZERO_RETURN:
            raise SessionEnded(True, "close_notify")
        raise SessionEnded(False, f"SSL_read error {error}, OpenSSL error {code:#x}")

    def seal(self, message: Any) -> memoryview | None:
        size = len(message)
        if not size:
            return None
        if _lib.SSL_write(self._ssl, _ffi.from_buffer(message), size) != size:
            _lib.ERR_clear_error()
            return None
        written = _lib.BIO_read(self._out, _RECORD_POINTER, RECORD_MAX)
        return _RECORD_VIEW[:written] if written > 0 else None


class PublicRecords:
    """:class:`Records` through pyOpenSSL's public methods."""

    __slots__ = ("_connection",)

    def __init__(self, connection: SSL.Connection) -> None:
        self._connection = connection

    def open(self, record: Any) -> bytes | None:
        connection = self._connection
        connection.bio_write(record)
        try:
            return connection.recv(PLAINTEXT_MAX)
        except SSL.WantReadError:
            return None
        except SSL.ZeroReturnError:
            raise SessionEnded(True, "close_notify") from None
        except SSL.Error as exc:
            raise SessionEnded(False, repr(exc)) from None

    def seal(self, message: Any) -> bytes | None:
        if not len(message):
            return None
        connection = self._connection
        try:
            connection.send(message)
            return connection.bio_read(RECORD_MAX)
        except SSL.Error:
            return None


def records_for(connection: SSL.Connection, *, direct: bool = True) -> Records:
    """The connection's :class:`Records`: direct when pyOpenSSL has the pointers."""
    if direct and all(hasattr(connection, name) for name in _POINTERS):
        return DirectRecords(connection)
    return PublicRecords(connection)
