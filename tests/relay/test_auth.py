"""Long-term credentials, nonces, REST API credentials and the RFC 8489 §9.2.4 checks."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from relay.core.auth import (
    Authenticator,
    AuthStatus,
    NonceManager,
    NonceStatus,
    PasswordAlgorithm,
    long_term_key,
    opaque_string,
    rest_credentials,
    rest_password,
)
from relay.core.credentials import REST_CLOCK_LEEWAY, Credentials
from relay.proto import stun, turn
from tests.relay import vectors as v

NOW = 1_763_701_000.0
CLIENT = ("198.51.100.7", 50000)
REALM = "turnscale.test"


# --- keys --------------------------------------------------------------------------------------


def test_md5_key_matches_rfc_5769() -> None:
    """RFC 5769 §2.4: the key that verifies the sample's MESSAGE-INTEGRITY."""
    key = long_term_key(v.LONG_TERM_USERNAME, v.LONG_TERM_REALM, v.LONG_TERM_PASSWORD)
    material = f"{v.LONG_TERM_USERNAME}:example.org:TheMatrIX".encode()
    assert key == hashlib.md5(material).digest()
    assert stun.verify_integrity(v.SAMPLE_LONG_TERM_REQUEST, key)


def test_sha256_key() -> None:
    key = long_term_key("user", "realm", "pass", PasswordAlgorithm.SHA256)
    assert key == hashlib.sha256(b"user:realm:pass").digest()
    assert len(long_term_key("user", "realm", "pass")) == 16


def test_opaque_string_approximation() -> None:
    # Non-ASCII spaces become U+0020 and text is NFC-composed (RFC 8265 §4.2.2)...
    assert opaque_string("a\u00a0b\u3000c") == "a b c"
    assert opaque_string("e\u0301") == "\u00e9"
    # ...but compatibility mappings (SASLprep's NFKC) are not applied: RFC 5769 §2.4's
    # "TheM\u00aatr\u2168" stays as it is. Clients send the prepared form in practice.
    assert opaque_string("TheM\u00aatr\u2168") != "TheMatrIX"


# --- nonces ------------------------------------------------------------------------------------


def test_nonce_round_trip() -> None:
    nonces = NonceManager()
    nonce = nonces.issue(CLIENT, NOW)
    assert len(nonce) == 32
    assert nonce.isascii() and nonce.isprintable()
    assert not nonce.startswith("obMatJos2")
    assert nonces.check(nonce, CLIENT, NOW) is NonceStatus.VALID
    assert nonces.check(nonce, CLIENT, NOW + 599) is NonceStatus.VALID


def test_stale_nonce() -> None:
    nonces = NonceManager()
    nonce = nonces.issue(CLIENT, NOW)
    assert nonces.check(nonce, CLIENT, NOW + 600) is NonceStatus.STALE
    assert nonces.check(nonce, CLIENT, NOW + 10_000) is NonceStatus.STALE
    # The clock went back: a genuine nonce that lives too long is stale, never valid.
    assert nonces.check(nonce, CLIENT, NOW - 3600) is NonceStatus.STALE


def test_custom_lifetime() -> None:
    nonces = NonceManager(lifetime=30)
    nonce = nonces.issue(CLIENT, NOW)
    assert nonces.check(nonce, CLIENT, NOW + 29) is NonceStatus.VALID
    assert nonces.check(nonce, CLIENT, NOW + 31) is NonceStatus.STALE
    with pytest.raises(ValueError):
        NonceManager(lifetime=0)


def test_tampered_nonce() -> None:
    nonces = NonceManager()
    nonce = nonces.issue(CLIENT, NOW)
    for i in range(len(nonce)):
        replacement = "A" if nonce[i] != "A" else "B"
        tampered = nonce[:i] + replacement + nonce[i + 1 :]
        assert nonces.check(tampered, CLIENT, NOW) is NonceStatus.INVALID, i
    # Extending the expiry field invalidates the MAC too.
    raw = bytearray(base64.urlsafe_b64decode(nonce))
    raw[7] ^= 0x40
    forged = base64.urlsafe_b64encode(bytes(raw)).decode()
    assert nonces.check(forged, CLIENT, NOW) is NonceStatus.INVALID
    for garbage in ("", "x", nonce + "A", nonce[:-1], "!" * 32, "=" * 32, "é" * 32):
        assert nonces.check(garbage, CLIENT, NOW) is NonceStatus.INVALID


def test_nonce_is_bound_to_the_client_address() -> None:
    nonces = NonceManager()
    nonce = nonces.issue(CLIENT, NOW)
    assert nonces.check(nonce, ("198.51.100.8", 50000), NOW) is NonceStatus.INVALID
    assert nonces.check(nonce, ("198.51.100.7", 50001), NOW) is NonceStatus.INVALID


def test_nonce_is_bound_to_the_process_key() -> None:
    nonce = NonceManager().issue(CLIENT, NOW)
    assert NonceManager().check(nonce, CLIENT, NOW) is NonceStatus.INVALID
    key = bytes(32)
    assert NonceManager(key).check(NonceManager(key).issue(CLIENT, NOW), CLIENT, NOW) is (
        NonceStatus.VALID
    )


# --- credential stores -----------------------------------------------------------------------


def test_static_credentials() -> None:
    store = Credentials(REALM, {"alice": "s3cret", "bob": "hunter2"})
    assert store.realm == REALM
    assert store.candidates("alice", NOW)[0] == long_term_key("alice", REALM, "s3cret")
    assert store.candidates("alice", NOW) == (long_term_key("alice", REALM, "s3cret"),)
    assert store.candidates("carol", NOW) == ()


def test_rest_password_formula() -> None:
    expected = base64.b64encode(hmac.new(b"k", b"1700000000:alice", hashlib.sha1).digest())
    assert rest_password("k", "1700000000:alice") == expected.decode()
    assert rest_password(b"k", "1700000000:alice") == expected.decode()


def test_rest_credentials_valid() -> None:
    store = Credentials(REALM, secrets=["current"])
    username, password = rest_credentials("current", "alice", NOW, ttl=3600)
    assert username == f"{int(NOW) + 3600}:alice"
    assert password == rest_password("current", username)
    assert store.candidates(username, NOW)[0] == long_term_key(username, REALM, password)
    assert store.candidates(username, NOW + 3599) == (long_term_key(username, REALM, password),)
    # A bare expiry (no user id) is allowed by the draft.
    bare, _ = rest_credentials("current", "", NOW, ttl=60)
    assert bare == str(int(NOW) + 60)
    assert store.candidates(bare, NOW) != ()


def test_rest_credentials_expired() -> None:
    store = Credentials(REALM, secrets=["current"])
    username, _ = rest_credentials("current", "alice", NOW, ttl=60)
    assert store.candidates(username, NOW + 60) == ()
    assert store.candidates(username, NOW + 61) == ()


@pytest.mark.parametrize(
    "username",
    ["alice", "alice:1763704600", "", ":alice", "-5:alice", "1e9:alice", "١٢٣:alice", " 17:a"],
)
def test_rest_credentials_malformed_usernames(username: str) -> None:
    assert Credentials(REALM, secrets=["s"]).candidates(username, 0) == ()


def test_rest_credentials_max_ttl() -> None:
    store = Credentials(REALM, secrets=["s"], max_ttl=86400)
    assert store.candidates(f"{int(NOW) + 86400 + REST_CLOCK_LEEWAY}:a", NOW) != ()
    assert store.candidates(f"{int(NOW) + 86401 + REST_CLOCK_LEEWAY}:a", NOW) == ()


def test_rest_credentials_wrong_secret_and_rotation() -> None:
    username, password = rest_credentials("old-secret", "alice", NOW, ttl=600)
    key = long_term_key(username, REALM, password)
    assert Credentials(REALM, secrets=["other"]).candidates(username, NOW)[0] != key
    assert key not in Credentials(REALM, secrets=["other"]).candidates(username, NOW)
    rotating = Credentials(REALM, secrets=["new-secret", "old-secret"])
    assert rotating.candidates(username, NOW)[0] != key  # the current secret's key comes first
    assert rotating.candidates(username, NOW)[1] == key
    new_username, new_password = rest_credentials("new-secret", "bob", NOW, ttl=600)
    assert new_password == rest_password("new-secret", new_username)
    assert rotating.candidates(new_username, NOW)[0] == long_term_key(
        new_username, REALM, new_password
    )


def test_static_users_come_before_rest_keys() -> None:
    # A bare expiry is a valid REST username and a possible static one: both keys count.
    bare, password = rest_credentials("s", "", NOW, ttl=600)
    store = Credentials(REALM, [(bare, "static-password"), ("bob", "builder")], ["s"])
    assert store.candidates(bare, NOW) == (
        long_term_key(bare, REALM, "static-password"),
        long_term_key(bare, REALM, password),
    )
    assert store.candidates("bob", NOW) == (long_term_key("bob", REALM, "builder"),)


def test_rest_credentials_validation() -> None:
    with pytest.raises(ValueError):
        rest_credentials("", "alice", NOW, 60)  # nothing to sign with
    with pytest.raises(ValueError):
        Credentials(REALM, secrets=[""])
    with pytest.raises(ValueError):
        rest_credentials("s", "a:b", NOW, 60)
    # Without users or secrets (live mode before the GatewayConfig is read) nobody gets in.
    empty = Credentials(REALM)
    assert empty.candidates("alice", NOW) == ()
    assert empty.candidates(f"{int(NOW) + 60}:alice", NOW) == ()


def test_secrets_never_in_repr_or_str() -> None:
    nonce_key = b"NONCEKEY" * 4
    static = Credentials(REALM, {"alice": "PASSWORD-ALICE"})
    rest = Credentials(REALM, secrets=["SECRET-ONE", b"SECRET-TWO"])
    nonces = NonceManager(nonce_key)
    auth = Authenticator(rest, nonces)
    key = long_term_key("alice", REALM, "PASSWORD-ALICE")
    request = signed_request(static.candidates("alice", NOW)[0], "alice", nonces)
    result = Authenticator(static, nonces).check(request, CLIENT, NOW)
    assert result.ok
    for obj in (static, rest, nonces, auth, result):
        for text in (repr(obj), str(obj)):
            for secret in ("PASSWORD-ALICE", "SECRET-ONE", "SECRET-TWO", "NONCEKEY"):
                assert secret not in text
            for blob in (key, nonce_key):
                assert blob.hex() not in text
                assert repr(blob) not in text


# --- the server-side checks ------------------------------------------------------------------


def signed_request(
    key: bytes | None,
    username: str | None,
    nonces: NonceManager,
    *,
    realm: str | None = REALM,
    nonce: str | None = None,
    sha256: bool = False,
    now: float = NOW,
) -> stun.Message:
    builder = stun.MessageBuilder(turn.ALLOCATE, stun.MessageClass.REQUEST)
    builder.add(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17))
    if username is not None:
        builder.add_text(stun.USERNAME, username)
    if realm is not None:
        builder.add_text(stun.REALM, realm)
    builder.add_text(stun.NONCE, nonces.issue(CLIENT, now) if nonce is None else nonce)
    if sha256:
        return stun.parse(builder.encode(integrity_sha256_key=key, fingerprint=True))
    return stun.parse(builder.encode(integrity_key=key, fingerprint=True))


@pytest.fixture
def nonces() -> NonceManager:
    return NonceManager()


@pytest.fixture
def authenticator(nonces: NonceManager) -> Authenticator:
    return Authenticator(Credentials(REALM, {"alice": "s3cret"}), nonces)


ALICE = long_term_key("alice", REALM, "s3cret")


def test_authenticated_request(authenticator: Authenticator, nonces: NonceManager) -> None:
    result = authenticator.check(signed_request(ALICE, "alice", nonces), CLIENT, NOW)
    assert result.ok and result.status is AuthStatus.OK
    assert result.username == "alice"
    assert result.key == ALICE
    assert result.error_code is None


def test_sha256_integrity_is_accepted(authenticator: Authenticator, nonces: NonceManager) -> None:
    request = signed_request(ALICE, "alice", nonces, sha256=True)
    assert authenticator.check(request, CLIENT, NOW).ok


def test_first_request_is_challenged(authenticator: Authenticator) -> None:
    bare = stun.parse(stun.MessageBuilder(turn.ALLOCATE, stun.MessageClass.REQUEST).encode())
    result = authenticator.check(bare, CLIENT, NOW)
    assert result.status is AuthStatus.CHALLENGE
    assert (result.error_code, result.wants_challenge) == (401, True)
    response = authenticator.add_challenge(turn.error_response(bare, 401), CLIENT, NOW)
    answer = stun.parse(response.encode())
    assert answer.get_error_code() == (401, "Unauthenticated")
    assert answer.get_text(stun.REALM) == REALM
    nonce = answer.get_text(stun.NONCE)
    assert nonce is not None
    assert authenticator.nonces.check(nonce, CLIENT, NOW) is NonceStatus.VALID


@pytest.mark.parametrize("missing", ["username", "realm"])
def test_missing_attributes_are_bad_requests(
    authenticator: Authenticator, nonces: NonceManager, missing: str
) -> None:
    request = signed_request(
        ALICE,
        None if missing == "username" else "alice",
        nonces,
        realm=None if missing == "realm" else REALM,
    )
    result = authenticator.check(request, CLIENT, NOW)
    assert result.status is AuthStatus.BAD_REQUEST
    assert (result.error_code, result.wants_challenge) == (400, False)


def test_malformed_username_is_a_bad_request(authenticator: Authenticator) -> None:
    builder = stun.MessageBuilder(turn.ALLOCATE, stun.MessageClass.REQUEST)
    builder.add(stun.USERNAME, b"\xff").add_text(stun.REALM, REALM).add_text(stun.NONCE, "n")
    request = stun.parse(builder.encode(integrity_key=ALICE))
    assert authenticator.check(request, CLIENT, NOW).status is AuthStatus.BAD_REQUEST


def test_missing_nonce_is_a_bad_request(authenticator: Authenticator) -> None:
    builder = stun.MessageBuilder(turn.ALLOCATE, stun.MessageClass.REQUEST)
    builder.add_text(stun.USERNAME, "alice").add_text(stun.REALM, REALM)
    request = stun.parse(builder.encode(integrity_key=ALICE))
    assert authenticator.check(request, CLIENT, NOW).status is AuthStatus.BAD_REQUEST


@pytest.mark.parametrize(
    ("key", "username", "realm"),
    [
        (long_term_key("alice", REALM, "wrong"), "alice", REALM),  # wrong password
        (long_term_key("mallory", REALM, "s3cret"), "mallory", REALM),  # unknown user
        (long_term_key("alice", "other", "s3cret"), "alice", "other"),  # foreign realm
    ],
)
def test_unauthorized(
    authenticator: Authenticator, nonces: NonceManager, key: bytes, username: str, realm: str
) -> None:
    result = authenticator.check(signed_request(key, username, nonces, realm=realm), CLIENT, NOW)
    assert result.status is AuthStatus.UNAUTHORIZED
    assert (result.error_code, result.wants_challenge, result.key) == (401, True, None)


def test_stale_nonce_is_438(authenticator: Authenticator, nonces: NonceManager) -> None:
    request = signed_request(ALICE, "alice", nonces, now=NOW - 601)
    result = authenticator.check(request, CLIENT, NOW)
    assert result.status is AuthStatus.STALE_NONCE
    assert (result.error_code, result.wants_challenge) == (438, True)
    assert result.key == ALICE  # known good: the 438 may be signed


def test_stale_nonce_with_wrong_password_is_401(
    authenticator: Authenticator, nonces: NonceManager
) -> None:
    request = signed_request(b"wrong key", "alice", nonces, now=NOW - 601)
    assert authenticator.check(request, CLIENT, NOW).status is AuthStatus.UNAUTHORIZED


def test_forged_or_foreign_nonce_is_401(authenticator: Authenticator) -> None:
    for nonce in ("made-up", NonceManager().issue(CLIENT, NOW)):
        request = signed_request(ALICE, "alice", NonceManager(), nonce=nonce)
        assert authenticator.check(request, CLIENT, NOW).status is AuthStatus.UNAUTHORIZED


def test_nonce_from_another_address_is_401(
    authenticator: Authenticator, nonces: NonceManager
) -> None:
    request = signed_request(ALICE, "alice", nonces)
    result = authenticator.check(request, ("203.0.113.1", 50000), NOW)
    assert result.status is AuthStatus.UNAUTHORIZED


def test_rest_credentials_end_to_end(nonces: NonceManager) -> None:
    store = Credentials(REALM, secrets=["new", "old"])
    authenticator = Authenticator(store, nonces)
    for secret in ("new", "old"):
        username, password = rest_credentials(secret, "alice", NOW, ttl=600)
        key = long_term_key(username, REALM, password)
        result = authenticator.check(signed_request(key, username, nonces), CLIENT, NOW)
        assert result.ok and result.key == key
    expired, password = rest_credentials("new", "alice", NOW - 700, ttl=600)
    key = long_term_key(expired, REALM, password)
    result = authenticator.check(signed_request(key, expired, nonces), CLIENT, NOW)
    assert result.status is AuthStatus.UNAUTHORIZED
