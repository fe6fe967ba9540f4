"""Certificates for the TLS tests, made with the ``openssl`` command: one CA, leaves for
127.0.0.1 signed by it, and client contexts that trust the CA; DTLS clients (pyOpenSSL over
memory BIOs) for the DTLS tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.relay.turn_client import TurnClient
from tests.tools import require_tool


def _openssl(*argv: str, cwd: Path) -> None:
    binary = shutil.which("openssl") or require_tool("openssl")
    result = subprocess.run([binary, *argv], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _new_key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", str(path), cwd=path.parent,
    )  # fmt: skip


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path
    serial: int

    @property
    def fingerprint(self) -> str:
        pem = self.cert.read_text()
        first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


class Authority:
    """A throw-away CA in ``directory`` that signs leaves for 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = directory / "ca.key"
        self.cert = directory / "ca.pem"
        _new_key(self.key)
        _openssl(
            "req", "-x509", "-new", "-key", str(self.key), "-out", str(self.cert),
            "-subj", "/CN=turnscale test CA", "-days", "2", cwd=directory,
        )  # fmt: skip
        self._serial = 100
        #: PEM appended to each leaf's certificate file: the intermediates up to the root.
        self.chain = ""

    def intermediate(self, name: str) -> Authority:
        """A CA signed by this one, whose leaves' files carry the chain (leaf, then the
        intermediate), as cert-manager and public CAs issue them."""
        sub = Authority.__new__(Authority)
        sub.directory = self.directory / name
        sub.directory.mkdir(parents=True, exist_ok=True)
        sub.key, sub.cert = sub.directory / "ca.key", sub.directory / "ca.pem"
        _new_key(sub.key)
        csr, ext = sub.directory / "ca.csr", sub.directory / "ca.ext"
        ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n")
        _openssl(
            "req", "-new", "-key", str(sub.key), "-out", str(csr), "-subj", f"/CN={name}",
            cwd=sub.directory,
        )  # fmt: skip
        self._serial += 1
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-out", str(sub.cert), "-days", "2", "-set_serial", str(self._serial),
            "-extfile", str(ext), cwd=sub.directory,
        )  # fmt: skip
        sub._serial = self._serial * 1000
        sub.chain = sub.cert.read_text() + self.chain
        return sub

    def leaf(self, name: str, *, days: int = 2, key: Path | None = None) -> Leaf:
        """A leaf ``name.pem``/``name.key`` (``days`` < 0: already expired; ``key``: reuse it)."""
        self._serial += 1
        cert = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        if key is None:
            _new_key(key_path)
        else:
            shutil.copyfile(key, key_path)
        csr = self.directory / f"{name}.csr"
        ext = self.directory / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl(
            "req", "-new", "-key", str(key_path), "-out", str(csr), "-subj", f"/CN={name}",
            cwd=self.directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-out", str(cert), "-days", str(days), "-set_serial", str(self._serial),
            "-extfile", str(ext), cwd=self.directory,
        )  # fmt: skip
        if self.chain:
            cert.write_text(cert.read_text() + self.chain)
        return Leaf(cert, key_path, self._serial)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        context.set_alpn_protocols(["stun.turn"])
        return context


def install(leaf: Leaf, cert: Path, key: Path) -> None:
    """Replace ``cert`` and ``key`` atomically (new inodes) with the leaf's files."""
    for source, target in ((leaf.cert, cert), (leaf.key, key)):
        temporary = target.with_suffix(".tmp")
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)


def served_certificate(port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> bytes:
    """The DER certificate a new TLS handshake with ``host:port`` gets (blocking)."""
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


# -- DTLS (RFC 6347) clients: pyOpenSSL over memory BIOs on an asyncio UDP socket


def dtls_client_context(authority: Authority) -> Any:
    """A pyOpenSSL DTLS 1.2 client context that trusts ``authority`` and offers ALPN
    ``stun.turn`` (RFC 7443)."""
    from OpenSSL import SSL

    context = SSL.Context(SSL.DTLS_CLIENT_METHOD)
    context.load_verify_locations(str(authority.cert))
    context.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _n, _d, ok: bool(ok))
    context.set_alpn_protos([b"stun.turn"])
    return context


def drain_bio(connection: Any) -> bytes:
    """What OpenSSL wrote to ``connection``'s outgoing memory BIO."""
    from OpenSSL import SSL

    parts: list[bytes] = []
    while True:
        try:
            parts.append(connection.bio_read(65536))
        except SSL.WantReadError:
            return b"".join(parts)


def client_hello(context: Any) -> tuple[Any, bytes]:
    """A new client connection and its first flight (a ClientHello without a cookie)."""
    from OpenSSL import SSL

    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    connection.set_ciphertext_mtu(1200)
    with contextlib.suppress(SSL.WantReadError):
        connection.do_handshake()
    return connection, drain_bio(connection)


def answer(connection: Any, datagram: bytes) -> bytes:
    """Feed ``datagram`` to a client ``connection`` in handshake; its next flight."""
    from OpenSSL import SSL

    connection.bio_write(datagram)
    with contextlib.suppress(SSL.WantReadError):
        connection.do_handshake()
    return drain_bio(connection)


class DtlsChannel(asyncio.DatagramProtocol):
    """A DTLS client association to one server address: handshake with OpenSSL's own
    retransmissions (bounded), then one record per :meth:`sendto`; each record received goes
    to ``deliver``. Has what :class:`tests.relay.turn_client.TurnClient` uses of a datagram
    transport (``sendto``, ``close``, ``get_extra_info``)."""

    def __init__(self, context: Any, deliver: Callable[[bytes], None]) -> None:
        from OpenSSL import SSL

        self.connection = SSL.Connection(context, None)
        self.connection.set_connect_state()
        self.connection.set_ciphertext_mtu(1200)
        self.deliver = deliver
        self.transport: asyncio.DatagramTransport | None = None
        self.established = False
        self.closed_by_peer = False
        self._progress = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:

        self.connection.bio_write(data)
        if not self.established:
            self._progress.set()
            return
        self._receive()

    def _receive(self) -> None:
        from OpenSSL import SSL

        while True:
            try:
                plain = self.connection.recv(65536)
            except SSL.WantReadError:
                break
            except (SSL.ZeroReturnError, SSL.Error):
                self.closed_by_peer = True
                break
            self.deliver(plain)
        self._flush()

    def _flush(self) -> None:
        out = drain_bio(self.connection)
        if out and self.transport is not None:
            self.transport.sendto(out)

    async def handshake(self, within: float = 10.0) -> None:
        """Complete the handshake within ``within`` seconds (raises TimeoutError)."""
        from OpenSSL import SSL

        deadline = time.monotonic() + within
        while True:
            self._progress.clear()
            try:
                self.connection.do_handshake()
            except SSL.WantReadError:
                pass
            else:
                self._flush()
                self.established = True
                self._receive()  # records that came with the last flight
                return
            self._flush()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("DTLS handshake not done in time")
            wait = self.connection.DTLSv1_get_timeout() or 1.0
            try:
                await asyncio.wait_for(self._progress.wait(), min(wait, left))
            except TimeoutError:
                self.connection.DTLSv1_handle_timeout()  # retransmit the last flight

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.connection.send(data)
        self._flush()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        assert self.transport is not None
        return self.transport.get_extra_info(name, default)

    def peer_fingerprint(self) -> str:
        from cryptography.hazmat.primitives import serialization

        certificate = self.connection.get_peer_certificate(as_cryptography=True)
        assert certificate is not None
        return fingerprint(certificate.public_bytes(serialization.Encoding.DER))

    def close(self) -> None:
        """Send close_notify and close the socket."""
        from OpenSSL import SSL

        if self.established:
            with contextlib.suppress(SSL.Error):
                self.connection.shutdown()
            self._flush()
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class DtlsTurnClient(TurnClient):
    """:class:`tests.relay.turn_client.TurnClient` over DTLS: the same requests, each one
    record (retransmitted like UDP)."""

    def __init__(self, server: tuple[str, int], context: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.context = context
        self.channel: DtlsChannel | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, channel = await loop.create_datagram_endpoint(
            lambda: DtlsChannel(self.context, self._incoming), remote_addr=self.server
        )
        try:
            await channel.handshake()
        except BaseException:
            channel.close()
            raise
        self.channel = channel
        self._transport = channel


async def dtls_handshake(server: tuple[str, int], authority: Authority) -> DtlsChannel:
    """A new DTLS session with ``server``, its chain checked against ``authority``."""
    loop = asyncio.get_running_loop()
    _, channel = await loop.create_datagram_endpoint(
        lambda: DtlsChannel(dtls_client_context(authority), lambda _data: None),
        remote_addr=server,
    )
    try:
        await channel.handshake()
    except BaseException:
        channel.close()
        raise
    return channel


async def dtls_served_fingerprint(server: tuple[str, int], authority: Authority) -> str:
    """The SHA-256 of the certificate a new DTLS handshake with ``server`` is served."""
    channel = await dtls_handshake(server, authority)
    try:
        return channel.peer_fingerprint()
    finally:
        channel.close()
