"""TLS certificates for TURN over TLS and DTLS (RFC 8656 §3.1, RFC 7065 ``turns:``, RFC 7350):
loading and checking a certificate/key pair, and deciding when the files on disk have changed.

Nothing here runs a task or a loop; :mod:`relay.net.tls` polls with it.

* :func:`load_pair` reads a PEM chain and its key into a new server
  :class:`ssl.SSLContext` (TLS 1.2 minimum, the ``ssl`` module's modern defaults, ALPN
  ``stun.turn`` of RFC 7443; a client that offers no ALPN is served too) and describes the
  leaf certificate (:class:`CertInfo`). The same bytes, parsed with ``cryptography``, are
  kept for :func:`dtls_context`, which builds a pyOpenSSL DTLS 1.2 server context (RFC 6347)
  from the pair (checked once at load, so a pair DTLS cannot serve is refused like any other).
  An unreadable file, a key that does not match the certificate, or a certificate outside
  its validity period is a :class:`CertError` that names the file's flag.
* :func:`stamp` is what a poll compares: for each file the path it resolves to (a
  Kubernetes Secret volume swaps its ``..data`` symlink), its inode, size and mtime.
  :class:`CertWatch` turns successive stamps into "load now" decisions, and remembers a
  refused pair so that it is reported once, not on every poll.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL

__all__ = [
    "ALPN",
    "DTLS1_2_VERSION",
    "CertError",
    "CertInfo",
    "CertWatch",
    "FileStamp",
    "LoadedPair",
    "Stamp",
    "TlsFiles",
    "describe",
    "dtls_context",
    "load_pair",
    "poll",
    "server_context",
    "stamp",
]

#: RFC 7443's ALPN label for TURN (and STUN) over TLS.
ALPN: Final = "stun.turn"
#: The DTLS 1.2 protocol version (RFC 6347 §4.1: {254, 253}); pyOpenSSL names no constant.
DTLS1_2_VERSION: Final = 0xFEFD
#: OpenSSL's ``SSL_MODE_NO_AUTO_CHAIN`` (ssl.h; pyOpenSSL names no constant): do not build
#: the certificate chain from the context's store on every handshake.
_MODE_NO_AUTO_CHAIN: Final = 0x00000008
#: What the DTLS cookie callbacks look like (pyOpenSSL: the connection, and the cookie).
CookieGenerate = Callable[[SSL.Connection], bytes]
CookieVerify = Callable[[SSL.Connection, bytes], bool]

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class CertError(Exception):
    """A certificate/key pair that cannot be served; the message names the flag."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files of ``--tls-cert`` (the chain, leaf first) and ``--tls-key``."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The leaf certificate of a loaded pair, as ``/status`` shows it."""

    subject: str
    issuer: str
    serial: str
    not_before: float
    not_after: float
    #: SHA-256 of the leaf certificate's DER, lower-case hex.
    fingerprint_sha256: str

    def status(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256,
        }


@dataclass(frozen=True, slots=True)
class LoadedPair:
    """A server context for new handshakes and what it serves; ``chain`` and ``key`` are the
    same pair parsed for :func:`dtls_context`."""

    context: ssl.SSLContext
    info: CertInfo
    chain: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    key: PrivateKeyTypes | None = field(default=None, repr=False)


def _iso(seconds: float) -> str:
    import datetime

    return (
        datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def server_context() -> ssl.SSLContext:
    """A server context without a certificate: TLS 1.2 minimum, modern defaults, ALPN, and
    one TLS 1.3 session ticket instead of OpenSSL's two.

    Each ticket (RFC 8446 §4.6.1) costs the server a session encoding and an encryption on
    every full handshake, about 5% of a new connection's instructions with its Allocate, and
    TURN clients rarely resume (each allocation is authenticated with its own credentials).
    One is kept, not none: in TLS 1.3 the server sends nothing else after the client's
    Finished, so without a ticket the ACK for it waits for the delayed-ACK timer (40 ms on
    Linux), and a client with Nagle's algorithm on holds its first request, sent right after
    Finished, until then. TLS 1.2 is unchanged (one RFC 5077 ticket)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE  # TURN authenticates clients with its credentials
    # A client that offers other protocols only is still served (OpenSSL: no ALPN chosen).
    context.set_alpn_protocols([ALPN])
    # Stateless tickets: OP_NO_TICKET would make TLS 1.3's stateful, held in the server's
    # session cache (up to 20,480 sessions) instead of costing an encryption.
    context.num_tickets = 1
    return context


def _even_hex(number: int) -> str:
    """A serial number as upper-case hex bytes (``0A`` for 10), as OpenSSL prints it."""
    digits = f"{number:X}"
    return digits if len(digits) % 2 == 0 else f"0{digits}"


def describe(cert: Path) -> CertInfo:
    """The first certificate of the PEM file ``cert``; raises :class:`CertError`."""
    try:
        pem = cert.read_bytes()
    except OSError as exc:
        raise CertError(f"--tls-cert {cert}: cannot read it ({exc.strerror or exc})") from None
    match = _PEM_CERT.search(pem)
    if match is None:
        raise CertError(f"--tls-cert {cert}: no PEM certificate in it")
    try:
        leaf = x509.load_pem_x509_certificate(match.group(0))
    except ValueError as exc:
        raise CertError(f"--tls-cert {cert}: not a usable certificate ({exc})") from None
    return CertInfo(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        serial=_even_hex(leaf.serial_number),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
        fingerprint_sha256=hashlib.sha256(
            leaf.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
    )


def load_pair(files: TlsFiles, now: float) -> LoadedPair:
    """A new server context serving ``files``, checked at ``now`` (unix seconds).

    Raises :class:`CertError` naming ``--tls-cert`` or ``--tls-key`` for an unreadable
    file, a key that does not match, or a certificate not valid at ``now``."""
    try:
        files.key.read_bytes()
    except OSError as exc:
        raise CertError(f"--tls-key {files.key}: cannot read it ({exc.strerror or exc})") from None
    info = describe(files.cert)
    if now >= info.not_after:
        raise CertError(
            f"--tls-cert {files.cert}: the certificate expired at {_iso(info.not_after)}"
        )
    if now < info.not_before:
        raise CertError(
            f"--tls-cert {files.cert}: the certificate is not valid before {_iso(info.not_before)}"
        )
    context = server_context()

    def no_pass_phrase() -> bytes:
        # Without a callback OpenSSL would prompt on the terminal and block the relay.
        raise CertError(
            f"--tls-key {files.key}: the key is encrypted (pass phrases are not supported)"
        )

    try:
        context.load_cert_chain(files.cert, files.key, password=no_pass_phrase)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise CertError(
                f"--tls-key {files.key} does not match the certificate of --tls-cert {files.cert}"
            ) from None
        raise CertError(
            f"--tls-key {files.key} / --tls-cert {files.cert}: cannot load the pair ({exc})"
        ) from None
    except OSError as exc:
        raise CertError(f"--tls-key {files.key}: cannot read it ({exc.strerror or exc})") from None
    chain, key = _parse_pair(files)
    pair = LoadedPair(context, info, chain, key)
    try:
        dtls_context(pair)  # what DTLS handshakes will get: refused now rather than then
    except SSL.Error as exc:
        raise CertError(
            f"--tls-key {files.key} / --tls-cert {files.cert}: cannot serve it over DTLS ({exc})"
        ) from None
    return pair


def _parse_pair(files: TlsFiles) -> tuple[tuple[x509.Certificate, ...], PrivateKeyTypes]:
    """The chain and key of ``files`` as ``cryptography`` objects (for pyOpenSSL)."""
    try:
        chain = tuple(x509.load_pem_x509_certificates(files.cert.read_bytes()))
    except (OSError, ValueError) as exc:
        raise CertError(f"--tls-cert {files.cert}: not a usable certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CertError(f"--tls-key {files.key}: not a usable private key ({exc})") from None
    return chain, key


#: The ALPN label as the callback compares it (encoded once, not per handshake).
_ALPN_WIRE: Final = ALPN.encode()


def _select_alpn(_connection: SSL.Connection, offered: list[bytes]) -> bytes | object:
    """RFC 7443: ``stun.turn`` when offered; a client offering other protocols only is
    still served, without ALPN."""
    return _ALPN_WIRE if _ALPN_WIRE in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def dtls_context(
    pair: LoadedPair,
    *,
    cookie_generate: CookieGenerate | None = None,
    cookie_verify: CookieVerify | None = None,
) -> SSL.Context:
    """A new pyOpenSSL DTLS server context (DTLS 1.2 minimum, RFC 6347) serving ``pair``,
    with ALPN ``stun.turn`` and the HelloVerifyRequest cookie callbacks (RFC 6347 §4.2.1;
    pyOpenSSL takes them only before the context is first used). No client certificates and
    no session resumption (tickets or cache): TURN authenticates clients with its own
    credentials. The MTU is set per connection, never
    queried (memory BIOs have none). Raises :class:`OpenSSL.SSL.Error`."""
    if not pair.chain or pair.key is None:
        raise SSL.Error([("", "", "the pair was not parsed for DTLS")])
    context = SSL.Context(SSL.DTLS_SERVER_METHOD)
    context.set_min_proto_version(DTLS1_2_VERSION)
    context.set_options(
        SSL.OP_NO_QUERY_MTU | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET
    )
    # No resumption: a TURN client authenticates with its credentials anyway, and a session
    # cache would hold memory per handshake (OpenSSL keeps up to 20,000 by default).
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_verify(SSL.VERIFY_NONE)
    # The chain served is the file's, as loaded (RFC 5246 §7.4.2): OpenSSL would otherwise
    # try to build one from the context's certificate store (empty) on every handshake.
    context.set_mode(_MODE_NO_AUTO_CHAIN)
    context.use_certificate(pair.chain[0])
    for extra in pair.chain[1:]:
        context.add_extra_chain_cert(extra)
    context.use_privatekey(pair.key)  # type: ignore[arg-type]
    context.check_privatekey()
    context.set_alpn_select_callback(_select_alpn)  # type: ignore[arg-type]
    if cookie_generate is not None and cookie_verify is not None:
        context.set_cookie_generate_callback(cookie_generate)
        context.set_cookie_verify_callback(cookie_verify)
    return context


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What identifies one version of a file: where it resolves to and its inode, size and
    modification time (a rewritten file or a swapped symlink changes at least one)."""

    resolved: str
    inode: int
    size: int
    mtime_ns: int


#: The stamps of (cert, key); None for a file that cannot be seen right now.
Stamp = tuple[FileStamp | None, FileStamp | None]


def _file_stamp(path: Path) -> FileStamp | None:
    try:
        resolved = os.path.realpath(path)
        info = os.stat(resolved)
    except OSError:
        return None
    return FileStamp(resolved, info.st_ino, info.st_size, info.st_mtime_ns)


def stamp(files: TlsFiles) -> Stamp:
    """The current stamps of the cert and key files (follows symlinks)."""
    return (_file_stamp(files.cert), _file_stamp(files.key))


class CertWatch:
    """Decides, poll after poll, whether the pair must be loaded again.

    :meth:`changed` is true for a stamp different from the one in use and from the last
    refused one; :meth:`loaded` and :meth:`refused` record the outcome. A refused pair is
    thus tried (and reported) once; the pair in use stays until a new one loads."""

    def __init__(self, current: Stamp) -> None:
        self.current = current
        self.refused_stamp: Stamp | None = None

    def changed(self, seen: Stamp) -> bool:
        return seen not in (self.current, self.refused_stamp)

    def loaded(self, seen: Stamp) -> None:
        self.current = seen
        self.refused_stamp = None

    def refused(self, seen: Stamp) -> None:
        self.refused_stamp = seen


def poll(
    watch: CertWatch,
    files: TlsFiles,
    now: float,
    load: Callable[[TlsFiles, float], LoadedPair] = load_pair,
) -> LoadedPair | CertError | None:
    """One poll: None if nothing changed, else the new pair or why it was refused (the
    decision is recorded in ``watch``)."""
    seen = stamp(files)
    if not watch.changed(seen):
        return None
    try:
        pair = load(files, now)
    except CertError as exc:
        watch.refused(seen)
        return exc
    # The files may have changed again while loading: the next poll then loads once more.
    watch.loaded(seen)
    return pair
