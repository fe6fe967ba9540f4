"""Where the relay's long-term credentials come from: static users and REST API secrets.

:class:`CombinedCredentials` is a :class:`relay.core.auth.CredentialStore` over both kinds at once
(``--user`` and ``--auth-secret`` together): a username is tried as a static user first, then
as an ephemeral ``EXPIRY:USERID`` username under every secret. The file readers parse what a
mounted Kubernetes Secret holds. No error message here ever contains a password or secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from relay.core.auth import RestCredentials, StaticCredentials

__all__ = [
    "CombinedCredentials",
    "parse_user",
    "read_secret_file",
    "read_user_file",
]


class CombinedCredentials:
    """Static users and REST API secrets behind one :class:`relay.core.auth.CredentialStore`."""

    __slots__ = ("_realm", "rest", "static")

    def __init__(
        self,
        realm: str,
        users: Iterable[tuple[str, str]] = (),
        secrets: Sequence[str] = (),
    ) -> None:
        self._realm = realm
        table = dict(users)
        self.static = StaticCredentials(realm, table) if table else None
        self.rest = RestCredentials(realm, list(secrets)) if secrets else None

    def __repr__(self) -> str:
        return f"CombinedCredentials(static={self.static!r}, rest={self.rest!r})"

    @property
    def realm(self) -> str:
        """The realm of every key."""
        return self._realm

    def lookup(self, username: str, now: float) -> bytes | None:
        """The static user's key, else the REST key under the current secret."""
        if self.static is not None:
            key = self.static.lookup(username, now)
            if key is not None:
                return key
        return None if self.rest is None else self.rest.lookup(username, now)

    def candidates(self, username: str, now: float) -> Sequence[bytes]:
        """Every key ``username`` may hold at ``now``."""
        keys: list[bytes] = []
        if self.static is not None:
            keys.extend(self.static.candidates(username, now))
        if self.rest is not None:
            keys.extend(self.rest.candidates(username, now))
        return keys


def parse_user(text: str, where: str) -> tuple[str, str]:
    """``NAME:PASSWORD`` -> ``(name, password)``; the name has no ``:`` (the first one splits).

    ``where`` names the source in errors (``--user``, a file line); the value never appears.
    """
    name, colon, password = text.partition(":")
    if not colon:
        raise ValueError(f"{where}: expected NAME:PASSWORD (no ':' found)")
    if not name.strip() or name != name.strip():
        raise ValueError(f"{where}: the user name is empty or has surrounding white space")
    if not password:
        raise ValueError(f"{where}: the password of user {name!r} is empty")
    return name, password


def _read(path: Path, flag: str) -> list[tuple[int, str]]:
    """``(line number, stripped line)`` of every line that is not blank or a comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag}: cannot read {str(path)!r}: {exc.__class__.__name__}") from None
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def read_user_file(path: Path, flag: str = "--user-file") -> list[tuple[str, str]]:
    """Users from a file: one ``NAME:PASSWORD`` per line; blank lines and ``#`` comments are
    skipped (surrounding white space is trimmed)."""
    where = f"{flag} {str(path)!r} line"
    return [parse_user(line, f"{where} {number}") for number, line in _read(path, flag)]


def read_secret_file(path: Path, flag: str = "--auth-secret-file") -> list[str]:
    """REST API secrets from a file, one per line (the first is the current one); blank lines
    and ``#`` comments are skipped."""
    secrets = [line for _, line in _read(path, flag)]
    if not secrets:
        raise ValueError(f"{flag}: {str(path)!r} holds no secret")
    return secrets
