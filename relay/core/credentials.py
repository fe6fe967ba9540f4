"""Where the relay's long-term credentials come from: static users and REST API secrets.

:class:`Credentials` is the relay's one :class:`relay.core.auth.CredentialStore`, over both
kinds at once (``--user`` and ``--auth-secret`` together, or a GatewayConfig): a username is
tried as a static user first, then as an ephemeral TURN REST API username ``EXPIRY[:USERID]``
(draft-uberti-behave-turn-rest-00 §2.2) under every secret, the current one first. Only the
derived keys of static users are kept. The file readers parse what a mounted Kubernetes
Secret holds. No error message, ``repr`` or ``str`` here ever contains a password or secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from relay.core.auth import long_term_key, rest_password

__all__ = [
    "MAX_REALM_BYTES",
    "MAX_REALM_CHARS",
    "REST_CLOCK_LEEWAY",
    "Credentials",
    "check_realm",
    "parse_user",
    "read_secret_file",
    "read_user_file",
]

_REST_EXPIRY: Final = re.compile(r"[0-9]{1,12}")
#: Seconds a REST username's expiry may lie beyond ``now + max_ttl``: the issuer's clock may
#: be a little ahead of the relay's (credentials are issued with the full lifetime).
REST_CLOCK_LEEWAY: Final = 60
#: RFC 8489 §14.9: REALM "MUST be a UTF-8-encoded sequence of fewer than 128 characters" and
#: at most 763 bytes; a longer one could not be sent in a 401 challenge at all.
MAX_REALM_CHARS: Final = 127
MAX_REALM_BYTES: Final = 762


def check_realm(realm: str) -> str | None:
    """Why ``realm`` cannot be a REALM (RFC 8489 §14.9), or None when it can. The one check of
    every realm source (``--realm``, a GatewayConfig's ``spec.realm``)."""
    if len(realm) > MAX_REALM_CHARS:
        return f"{len(realm)} characters, RFC 8489 §14.9 allows fewer than 128"
    size = len(realm.encode("utf-8", "surrogatepass"))
    if size > MAX_REALM_BYTES:
        return f"{size} bytes in UTF-8, RFC 8489 §14.9 allows fewer than 763"
    return None


class Credentials:
    """Static users (``name -> password``) and REST API secrets behind one credential store.

    ``secrets`` are tried in order (the first signs new credentials, the others are kept
    during rotation). A REST username whose expiry is not after ``now`` is refused, and so is
    one further out than ``max_ttl`` (plus :data:`REST_CLOCK_LEEWAY`) when it is set: the
    REST API's credentials are short-lived (draft-uberti-behave-turn-rest-00 §2.2), and an
    expiry of ``999999999999`` would make a leaked one good forever.
    """

    __slots__ = ("_keys", "_realm", "_secrets", "max_ttl")

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        secrets: Sequence[str | bytes] = (),
        *,
        max_ttl: float | None = None,
    ) -> None:
        if any(len(s) == 0 for s in secrets):
            raise ValueError("REST API secrets must not be empty")
        self._realm = realm
        self._keys = {name: long_term_key(name, realm, pw) for name, pw in dict(users).items()}
        self._secrets = tuple(s.encode() if isinstance(s, str) else bytes(s) for s in secrets)
        self.max_ttl = max_ttl

    def __repr__(self) -> str:
        return (
            f"Credentials(realm={self._realm!r}, users={len(self._keys)}, "
            f"secrets=<{len(self._secrets)} hidden>, max_ttl={self.max_ttl!r})"
        )

    @property
    def realm(self) -> str:
        """The realm of every key."""
        return self._realm

    def candidates(self, username: str, now: float) -> Sequence[bytes]:
        """Every key ``username`` may hold at ``now``: the static user's, then one per secret
        (current first) when it is a well-formed, unexpired REST username."""
        key = self._keys.get(username)
        static = () if key is None else (key,)
        if not self._secrets or not self._rest_valid(username, now):
            return static
        return static + tuple(
            long_term_key(username, self._realm, rest_password(s, username)) for s in self._secrets
        )

    def is_static(self, username: str) -> bool:
        return username in self._keys

    def _rest_valid(self, username: str, now: float) -> bool:
        expiry_text = username.partition(":")[0]
        if not _REST_EXPIRY.fullmatch(expiry_text):
            return False
        expiry = int(expiry_text)
        if expiry <= now:
            return False
        return self.max_ttl is None or expiry - now <= self.max_ttl + REST_CLOCK_LEEWAY


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
