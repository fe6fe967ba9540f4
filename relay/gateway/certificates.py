"""Listener certificates from Secrets (Gateway API ``tls.certificateRefs``) for the relay.

A TURN-TLS or TURN-DTLS listener's Secret is a ``kubernetes.io/tls`` Secret: ``tls.crt``
(the PEM chain, leaf first) and ``tls.key`` (its PEM key). The relay serves it with the same
file-based loading and rotation as ``--tls-cert``/``--tls-key`` (:mod:`relay.core.certs`,
:mod:`relay.net.tls`: RFC 8656 §3.1, RFC 7065 ``turns:``):

* file mode (:func:`mounted`): the Secret is mounted at ``--secrets-dir``/NAMESPACE/NAME
  (the layout of :class:`relay.gateway.files.SecretsDir`), so its files are served where
  they are, and kubelet's ``..data`` swap on renewal is what the rotation follows;
* live mode (:class:`CertificateStore`): the PEMs of the watched Secret are written into a
  private directory (0700, files 0600) in kubelet's layout: a new ``..N`` directory, then
  ``..data`` swapped to it with one rename, so a poll sees the old pair or the new one,
  never half of each.

Either way a pair is checked before it is used (:func:`relay.core.certs.load_pair`: both
keys there, the key matches, the certificate valid now). A refusal is a
:class:`relay.gateway.translate.RefProblem` with reason ``InvalidCertificateRef`` whose
message names the Secret and key, never their contents.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final

from relay.core.certs import CertError, TlsFiles, load_pair
from relay.gateway.files import MAX_VALUE
from relay.gateway.translate import (
    INVALID_CERTIFICATE_REF,
    Key,
    RefProblem,
    SecretSource,
)

__all__ = ["TLS_CERT", "TLS_KEY", "CertificateStore", "check", "mounted"]

#: The keys of a ``kubernetes.io/tls`` Secret.
TLS_CERT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"
#: What marks an encrypted PEM key: PKCS#8 and the traditional (OpenSSL) header.
ENCRYPTED: Final = ("-----BEGIN ENCRYPTED PRIVATE KEY-----", "Proc-Type: 4,ENCRYPTED")


def _problem(secret: Key, text: str) -> RefProblem:
    return RefProblem(INVALID_CERTIFICATE_REF, f"Secret {secret[0]}/{secret[1]}: {text}")


def _keys(source: SecretSource, secret: Key) -> tuple[str, str] | RefProblem:
    """``tls.crt`` and ``tls.key`` of the Secret, or why they cannot be had."""
    try:
        keys = source.secret(*secret)
    except LookupError as exc:
        return _problem(secret, str(exc.args[0] if exc.args else exc))
    missing = [key for key in (TLS_CERT, TLS_KEY) if not (keys.get(key) or "").strip()]
    if missing:
        return _problem(
            secret,
            f"has no {' and no '.join(repr(k) for k in missing)} (a kubernetes.io/tls Secret "
            "has both)",
        )
    cert, key = keys[TLS_CERT], keys[TLS_KEY]
    for name, value in ((TLS_CERT, cert), (TLS_KEY, key)):
        if len(value) > MAX_VALUE:
            return _problem(secret, f"{name!r} is over {MAX_VALUE} bytes")
    # OpenSSL would ask for a pass phrase (on a terminal: blocking the relay), so an
    # encrypted key is refused before it is loaded.
    if any(marker in key for marker in ENCRYPTED):
        return _problem(
            secret, f"{TLS_KEY!r} is encrypted (a kubernetes.io/tls Secret holds a plain key)"
        )
    return cert, key


def check(files: TlsFiles, secret: Key, now: float) -> RefProblem | None:
    """Whether ``files`` hold a pair the relay can serve at ``now``; the refusal names
    the Secret's keys instead of the files' paths."""
    try:
        load_pair(files, now)
    except CertError as exc:
        text = (
            str(exc)
            .replace(f"--tls-cert {files.cert}", TLS_CERT)
            .replace(f"--tls-key {files.key}", TLS_KEY)
        )
        return _problem(secret, text)
    return None


def mounted(source: SecretSource, root: Path, secret: Key, now: float) -> TlsFiles | RefProblem:
    """File mode: the mounted Secret's files (``root/NAMESPACE/NAME/tls.crt`` and
    ``tls.key``), checked."""
    found = _keys(source, secret)
    if isinstance(found, RefProblem):
        return found
    directory = root / secret[0] / secret[1]
    files = TlsFiles(directory / TLS_CERT, directory / TLS_KEY)
    return check(files, secret, now) or files


class CertificateStore:
    """Live mode: the listeners' Secrets as files in a private directory of their own.

    :meth:`install` writes a Secret's pair (when it differs from the one in place) and
    returns the files the relay serves; the paths stay the same across rotations, so the
    listener is not reopened and the relay's poll (or
    :meth:`relay.net.server.RelayServer.check_certificates`) picks the new pair up for new
    handshakes while established connections keep theirs."""

    def __init__(self, root: Path | None = None, *, wall: Callable[[], float] = time.time) -> None:
        # mkdtemp makes the directory 0700: the keys are readable by this process only.
        self.root = Path(tempfile.mkdtemp(prefix="turnscale-certs-")) if root is None else root
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.wall = wall
        #: What is in place, by Secret: the SHA-256 of its cert and key.
        self._installed: dict[Key, str] = {}
        self._serial = 0

    def __repr__(self) -> str:
        return f"CertificateStore({str(self.root)!r})"

    def files(self, secret: Key) -> TlsFiles:
        directory = self.root / secret[0] / secret[1]
        return TlsFiles(directory / TLS_CERT, directory / TLS_KEY)

    def install(self, source: SecretSource, secret: Key) -> TlsFiles | RefProblem:
        """The Secret's pair in place and checked; a refused pair leaves the previous one
        (if any) where it was."""
        found = _keys(source, secret)
        if isinstance(found, RefProblem):
            return found
        digest = hashlib.sha256("\0".join(found).encode()).hexdigest()
        files = self.files(secret)
        if self._installed.get(secret) == digest:
            return files
        directory = files.cert.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._serial += 1
        staged = directory / f"..{self._serial}"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(mode=0o700)
        for name, text in zip((TLS_CERT, TLS_KEY), found, strict=True):
            _write_private(staged / name, text)
        problem = check(TlsFiles(staged / TLS_CERT, staged / TLS_KEY), secret, self.wall())
        if problem is not None:
            shutil.rmtree(staged, ignore_errors=True)
            return problem
        # One rename swaps the pair: ..data points at the new directory, the key links
        # (made once) resolve through it.
        link = directory / "..data.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(staged.name)
        os.replace(link, directory / "..data")
        for name in (TLS_CERT, TLS_KEY):
            if not (directory / name).is_symlink():
                (directory / name).symlink_to(f"..data/{name}")
        for old in directory.iterdir():
            if old.name.startswith("..") and old.name not in ("..data", staged.name):
                shutil.rmtree(old, ignore_errors=True)
        self._installed[secret] = digest
        return files

    def retain(self, secrets: Iterable[Key]) -> None:
        """Remove the pairs of Secrets no listener names any more."""
        keep = set(secrets)
        for secret in [s for s in self._installed if s not in keep]:
            del self._installed[secret]
            shutil.rmtree(self.root / secret[0] / secret[1], ignore_errors=True)

    def close(self) -> None:
        """Remove every file (the keys leave the disk with the relay)."""
        self._installed.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def installed(self) -> Mapping[Key, str]:
        return dict(self._installed)


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
