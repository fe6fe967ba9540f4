"""Stateless DTLS cookies (RFC 6347 §4.2.1): the HelloVerifyRequest's proof that a client
receives at the address it sends from, before the relay keeps anything for it.

A cookie is HMAC-SHA256 over the client's IP and port, keyed with a secret drawn at random
per process and replaced every :data:`ROTATE_EVERY` seconds; the previous secret is still
accepted, so a cookie is good for one to two periods. Nothing per client is stored: a flood
of ClientHellos from spoofed sources costs one HMAC and one small answer each, never memory.
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
        self._current = random(_SECRET_SIZE)
        self._previous = random(_SECRET_SIZE)
        self._rotated_at = clock()

    def __repr__(self) -> str:
        return f"CookieJar(rotate_every={self.rotate_every})"  # never the secrets

    def _rotate(self) -> None:
        now = self._clock()
        if now - self._rotated_at >= self.rotate_every:
            # Two periods or more without a ClientHello: neither old secret may live on.
            stale = now - self._rotated_at >= 2 * self.rotate_every
            self._previous = self._random(_SECRET_SIZE) if stale else self._current
            self._current = self._random(_SECRET_SIZE)
            self._rotated_at = now

    @staticmethod
    def _message(client: ClientAddress) -> bytes:
        return f"{client[0]}|{client[1]}".encode()

    def cookie(self, client: ClientAddress) -> bytes:
        """The cookie ``client`` gets in a HelloVerifyRequest now."""
        self._rotate()
        return hmac.digest(self._current, self._message(client), hashlib.sha256)[:COOKIE_SIZE]

    def valid(self, client: ClientAddress, cookie: bytes) -> bool:
        """Whether ``cookie`` was given to ``client`` under the current or previous secret."""
        self._rotate()
        if len(cookie) != COOKIE_SIZE:
            return False
        message = self._message(client)
        return any(
            hmac.compare_digest(hmac.digest(secret, message, hashlib.sha256)[:COOKIE_SIZE], cookie)
            for secret in (self._current, self._previous)
        )
