"""Long-term credentials for TURN (RFC 8489 §9.2, RFC 8656 §5), sans-I/O.

* :func:`long_term_key`: ``key = MD5(username ":" OpaqueString(realm) ":" OpaqueString(password))``
  (§9.2.2), or SHA-256 of the same for the SHA-256 password algorithm (§18.5).
* :class:`NonceManager`: stateless nonces. A nonce is an expiry time and an HMAC (key random per
  process) over that time and the client's transport address, base64url-encoded. It is checked
  without any table, and an expired but genuine nonce (:attr:`NonceStatus.STALE`, answered 438)
  is told apart from a forged or foreign one (:attr:`NonceStatus.INVALID`).
* The ephemeral "TURN REST API" credentials of draft-uberti-behave-turn-rest-00 §2.2:
  username ``EXPIRY[:USERID]`` (unix seconds), password ``base64(HMAC-SHA1(secret,
  username))`` (:func:`rest_password`), minted by :func:`rest_credentials`.
* :class:`CredentialStore`: where the keys come from (the relay's is
  :class:`relay.core.credentials.Credentials`).
* :class:`Authenticator`: the server-side checks of RFC 8489 §9.2.4, in its order, as a pure
  function of the request, the client address and the time.

Time is always passed in (``now``: unix seconds) so tests never sleep. No object's ``repr`` or
``str`` shows a password, secret or key.

Limitations: OpaqueString (RFC 8265) is approximated by NFC normalisation and mapping non-ASCII
spaces to U+0020; code points PRECIS disallows are not rejected. Plain-ASCII credentials, what
WebRTC deployments use, are unaffected. USERHASH, PASSWORD-ALGORITHM(S) and the nonce cookie
"obMatJos2" (§9.2.1) are not supported: nonces never start with the cookie, so clients stay on
MD5 and MESSAGE-INTEGRITY (MESSAGE-INTEGRITY-SHA256 from a client is still verified).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final, Protocol

from relay.proto.stun import (
    MAX_USERNAME,
    MESSAGE_INTEGRITY,
    MESSAGE_INTEGRITY_SHA256,
    NONCE,
    REALM,
    USERNAME,
    Message,
    MessageBuilder,
    StunError,
    verify_integrity,
    verify_integrity_sha256,
)

__all__ = [
    "NONCE_LIFETIME",
    "AuthResult",
    "AuthStatus",
    "Authenticator",
    "CredentialStore",
    "NonceManager",
    "NonceStatus",
    "PasswordAlgorithm",
    "long_term_key",
    "opaque_string",
    "rest_credentials",
    "rest_password",
]

#: How long a nonce stays valid, in seconds.
NONCE_LIFETIME: Final = 600.0


class PasswordAlgorithm(IntEnum):
    """PASSWORD-ALGORITHM values (RFC 8489 §18.5)."""

    MD5 = 0x0001
    SHA256 = 0x0002


_SPACES: Final = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")


def opaque_string(text: str) -> str:
    """Approximate PRECIS OpaqueString (RFC 8265 §4.2.2): non-ASCII spaces to U+0020, then NFC."""
    return unicodedata.normalize("NFC", _SPACES.sub(" ", text))


def long_term_key(
    username: str,
    realm: str,
    password: str,
    algorithm: PasswordAlgorithm = PasswordAlgorithm.MD5,
) -> bytes:
    """The long-term credential key (RFC 8489 §9.2.2): 16 bytes (MD5) or 32 (SHA-256)."""
    material = f"{username}:{opaque_string(realm)}:{opaque_string(password)}".encode()
    if algorithm is PasswordAlgorithm.SHA256:
        return hashlib.sha256(material).digest()
    return hashlib.md5(material, usedforsecurity=False).digest()


# --- nonces ------------------------------------------------------------------------------------


class NonceStatus(Enum):
    """Result of checking a nonce."""

    VALID = "valid"
    #: Issued by this process for this client, but expired: answer 438 with a fresh nonce.
    STALE = "stale"
    #: Not issued by this process for this client (forged, garbled, another pod's): answer 401.
    INVALID = "invalid"


_NONCE_RE: Final = re.compile(r"[A-Za-z0-9_-]{32}")
_NONCE_VERSION: Final = b"\x01"


class NonceManager:
    """Issues and checks stateless nonces bound to a client transport address.

    Wire form: base64url of 8 bytes of expiry (unix seconds, big-endian) and the first 16 bytes
    of HMAC-SHA256(key, version || expiry || host "|" port); 32 printable characters, never
    starting with RFC 8489's "obMatJos2" cookie.
    """

    __slots__ = ("_key", "lifetime")

    def __init__(self, key: bytes | None = None, lifetime: float = NONCE_LIFETIME) -> None:
        """``key`` defaults to 32 random bytes: nonces are only valid in this process."""
        if lifetime <= 0:
            raise ValueError("nonce lifetime must be positive")
        self._key = secrets.token_bytes(32) if key is None else bytes(key)
        self.lifetime = lifetime

    def __repr__(self) -> str:
        return f"NonceManager(lifetime={self.lifetime!r}, key=<hidden>)"

    def _mac(self, expiry: bytes, client: tuple[str, int]) -> bytes:
        host, port = client[0], client[1]
        message = _NONCE_VERSION + expiry + f"{host}|{port}".encode()
        return hmac.digest(self._key, message, "sha256")[:16]

    def issue(self, client: tuple[str, int], now: float) -> str:
        """A nonce for ``client`` (``(host, port)``), valid for :attr:`lifetime` from ``now``."""
        expiry = max(0, math.ceil(now + self.lifetime)).to_bytes(8, "big")
        return base64.urlsafe_b64encode(expiry + self._mac(expiry, client)).decode("ascii")

    def check(self, nonce: str, client: tuple[str, int], now: float) -> NonceStatus:
        """Whether ``nonce`` is valid for ``client`` at ``now``; stale and invalid differ."""
        if not _NONCE_RE.fullmatch(nonce):
            return NonceStatus.INVALID
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except (binascii.Error, ValueError):
            return NonceStatus.INVALID
        expiry, mac = raw[:8], raw[8:]
        if not hmac.compare_digest(mac, self._mac(expiry, client)):
            return NonceStatus.INVALID
        remaining = int.from_bytes(expiry, "big") - now
        # A genuine nonce that expires further out than any we issue means the clock went
        # back: make the client fetch a new one rather than extend its life.
        if remaining <= 0 or remaining > self.lifetime + 1:
            return NonceStatus.STALE
        return NonceStatus.VALID


# --- credential stores and the TURN REST API ------------------------------------------------


class CredentialStore(Protocol):
    """Where long-term keys come from. ``realm`` is the realm the keys are computed for."""

    @property
    def realm(self) -> str:
        """The realm of every key this store returns."""
        ...

    def candidates(self, username: str, now: float) -> Sequence[bytes]:
        """Every key ``username`` may hold at ``now`` (several while a secret rotates)."""
        ...

    def is_static(self, username: str) -> bool:
        """Whether ``username`` is a static user (its quota is not a REST user id's)."""
        ...


def rest_password(secret: str | bytes, username: str) -> str:
    """TURN REST API password: ``base64(HMAC-SHA1(secret, username))``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return base64.b64encode(hmac.digest(key, username.encode(), "sha1")).decode()


def rest_credentials(secret: str | bytes, user_id: str, now: float, ttl: float) -> tuple[str, str]:
    """``(username, password)`` for ``user_id``, valid for ``ttl`` s from ``now`` (unix
    seconds), signed with ``secret``: what a TURN REST API endpoint hands a web client.

    The username is ``EXPIRY:USERID``, or ``EXPIRY`` alone for an empty user id.
    """
    if ":" in user_id:
        raise ValueError("a REST API user id must not contain ':'")
    if len(secret) == 0:
        raise ValueError("REST API secrets must not be empty")
    expiry = math.floor(now + ttl)
    username = f"{expiry}:{user_id}" if user_id else str(expiry)
    return username, rest_password(secret, username)


# --- the server-side checks --------------------------------------------------------------------


class AuthStatus(Enum):
    """Outcome of :meth:`Authenticator.check`."""

    OK = "ok"
    #: No MESSAGE-INTEGRITY: answer 401 with REALM and NONCE (the first leg of every client).
    CHALLENGE = "challenge"
    #: Integrity present but USERNAME, REALM or NONCE missing or malformed: answer 400.
    BAD_REQUEST = "bad_request"
    #: Unknown user, wrong realm or key, or a nonce we did not issue: answer 401.
    UNAUTHORIZED = "unauthorized"
    #: Everything right but the nonce expired: answer 438 with a fresh NONCE and REALM.
    STALE_NONCE = "stale_nonce"


#: The key an unknown user's request is checked against, only to spend the time a known
#: user's check takes (its result is ignored).
_DUMMY_KEYS: Final = (secrets.token_bytes(16),)

_ERROR_CODES: Final = {
    AuthStatus.CHALLENGE: 401,
    AuthStatus.BAD_REQUEST: 400,
    AuthStatus.UNAUTHORIZED: 401,
    AuthStatus.STALE_NONCE: 438,
}


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What :meth:`Authenticator.check` decided. ``key`` (hidden from repr) signs the answer."""

    status: AuthStatus
    username: str | None = None
    key: bytes | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the request is authenticated."""
        return self.status is AuthStatus.OK

    @property
    def error_code(self) -> int | None:
        """The STUN error code to answer with (None when OK)."""
        return _ERROR_CODES.get(self.status)

    @property
    def wants_challenge(self) -> bool:
        """Whether the error answer must carry REALM and NONCE (401 and 438 do, 400 does not)."""
        return self.status in (
            AuthStatus.CHALLENGE,
            AuthStatus.UNAUTHORIZED,
            AuthStatus.STALE_NONCE,
        )


class Authenticator:
    """RFC 8489 §9.2.4 for a TURN server: a credential store plus a nonce manager."""

    __slots__ = ("nonces", "store")

    def __init__(self, store: CredentialStore, nonces: NonceManager | None = None) -> None:
        self.store = store
        self.nonces = NonceManager() if nonces is None else nonces

    def __repr__(self) -> str:
        return f"Authenticator(store={self.store!r}, nonces={self.nonces!r})"

    @property
    def realm(self) -> str:
        """The realm sent in challenges."""
        return self.store.realm

    def add_challenge(
        self, builder: MessageBuilder, client: tuple[str, int], now: float
    ) -> MessageBuilder:
        """Add REALM and a fresh NONCE for ``client`` to an error response (401, 438)."""
        return builder.add_text(REALM, self.realm).add_text(NONCE, self.nonces.issue(client, now))

    def check(self, request: Message, client: tuple[str, int], now: float) -> AuthResult:
        """Authenticate ``request`` (parsed from the bytes ``client`` sent) at ``now``.

        The order is RFC 8489 §9.2.4's: no integrity -> CHALLENGE; missing or malformed
        USERNAME/REALM/NONCE -> BAD_REQUEST; realm not ours, unknown or expired user, wrong
        integrity -> UNAUTHORIZED (an unknown user after the one integrity check a known user's
        wrong key costs: timing does not tell which names exist); then the nonce: forged or
        foreign -> UNAUTHORIZED, expired -> STALE_NONCE. MESSAGE-INTEGRITY-SHA256 is checked
        instead of MESSAGE-INTEGRITY when present (§9.2.4), with the same key.
        """
        sha256 = request.has(MESSAGE_INTEGRITY_SHA256)
        if not sha256 and not request.has(MESSAGE_INTEGRITY):
            return AuthResult(AuthStatus.CHALLENGE)
        try:
            username = request.get_text(USERNAME, MAX_USERNAME)
            realm = request.get_text(REALM)
            nonce = request.get_text(NONCE)
        except StunError:
            return AuthResult(AuthStatus.BAD_REQUEST)
        if username is None or realm is None or nonce is None:
            return AuthResult(AuthStatus.BAD_REQUEST)
        if realm != self.realm:
            return AuthResult(AuthStatus.UNAUTHORIZED, username)
        verify = verify_integrity_sha256 if sha256 else verify_integrity
        candidates = self.store.candidates(username, now)
        # An unknown user costs what a known one with a wrong password does (one integrity
        # check, same code path), so the answer's timing does not tell which names exist.
        known = bool(candidates)
        key = next((k for k in (candidates or _DUMMY_KEYS) if verify(request, k)), None)
        if key is None or not known:
            return AuthResult(AuthStatus.UNAUTHORIZED, username)
        status = self.nonces.check(nonce, client, now)
        if status is NonceStatus.INVALID:
            return AuthResult(AuthStatus.UNAUTHORIZED, username)
        if status is NonceStatus.STALE:
            # The key is known good: the 438 answer MAY carry MESSAGE-INTEGRITY (§9.2.4).
            return AuthResult(AuthStatus.STALE_NONCE, username, key)
        return AuthResult(AuthStatus.OK, username, key)
