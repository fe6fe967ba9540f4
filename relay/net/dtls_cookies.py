"""Stateless DTLS cookies (RFC 6347 §4.2.1): the HelloVerifyRequest's proof that a client
receives at the address it sends from, before the relay keeps anything for it.

A cookie is HMAC-SHA256 (RFC 2104) over the client's IP and port, keyed with a secret drawn
at random per process and replaced every :data:`ROTATE_EVERY` seconds; the previous secret is
still accepted, so a cookie is good for one to two periods. Nothing per client is stored: a
flood of ClientHellos from spoofed sources costs one HMAC and one small answer each, never
memory. The keyed HMAC state of each secret is computed once and copied per cookie, so a
cookie costs the hashing of its message only (OpenSSL asks for the check twice per new
session: in ``DTLSv1_listen`` and again in the handshake).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Final

from relay.core.allocation import ClientAddress

__all__ = ["COOKIE_SIZE", "ROTATE_EVERY", "CookieJar"]

#: Cookie bytes (a truncated HMAC-SHA256: 128 bits are far beyond guessing in a period).
COOKIE_SIZE: Final = 16
#: Seconds between two secrets.
ROTATE_EVERY: Final = 60.0
_SECRET_SIZE: Final = 32


class CookieJar:
    """Makes and checks cookies; see the module docstring."""

    __slots__ = ("_clock", "_current", "_previous", "_random", "_rotated_at", "rotate_every")

    _current: hmac.HMAC
    _previous: hmac.HMAC

    def __init__(
        self,
        *,
        rotate_every: float = ROTATE_EVERY,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.rotate_every = rotate_every
        self._clock = clock
        self._random = random
        self._current = self._keyed()
        self._previous = self._keyed()
        self._rotated_at = clock()

    def __repr__(self) -> str:
        return f"CookieJar(rotate_every={self.rotate_every})"  # never the secrets

    def _keyed(self) -> hmac.HMAC:
        """The HMAC state after a new random secret (the secret itself is not kept)."""
        return hmac.new(self._random(_SECRET_SIZE), digestmod=hashlib.sha256)

    def _rotate(self) -> None:
        now = self._clock()
        if now - self._rotated_at >= self.rotate_every:
            # Two periods or more without a ClientHello: neither old secret may live on.
            stale = now - self._rotated_at >= 2 * self.rotate_every
            self._previous = self._keyed() if stale else self._current
            self._current = self._keyed()
            self._rotated_at = now

    @staticmethod
    def _mac(keyed: hmac.HMAC, client: ClientAddress) -> bytes:
        mac = keyed.copy()
        mac.update(f"{client[0]}|{client[1]}".encode())
        return mac.digest()[:COOKIE_SIZE]

    def cookie(self, client: ClientAddress) -> bytes:
        """The cookie ``client`` gets in a HelloVerifyRequest now."""
        self._rotate()
        return self._mac(self._current, client)

    def valid(self, client: ClientAddress, cookie: bytes) -> bool:
        """Whether ``cookie`` was given to ``client`` under the current or previous secret."""
        self._rotate()
        if len(cookie) != COOKIE_SIZE:
            return False
        return hmac.compare_digest(self._mac(self._current, client), cookie) or (
            hmac.compare_digest(self._mac(self._previous, client), cookie)
        )
