"""Certificates for the TLS tests, made with the ``openssl`` command (the ``cryptography``
package is not installed): one CA, leaves for 127.0.0.1 signed by it, and client contexts
that trust the CA."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
