"""An unknown user is checked like a known one with a wrong password: one integrity check.

Found by an attack round: unknown static users were answered measurably faster than known
users with a wrong password (no HMAC at all), which tells an attacker which names exist.
"""

from __future__ import annotations

from typing import Any

import pytest

from relay.core import auth
from relay.core.auth import Authenticator, AuthStatus, long_term_key
from relay.core.credentials import Credentials
from relay.proto import stun, turn
from relay.proto.stun import Message, MessageBuilder, MessageClass

REALM = "test"
CLIENT = ("198.51.100.7", 40000)
WALL = 1_763_701_000.0


def request(authenticator: Authenticator, username: str, password: str) -> Message:
    builder = MessageBuilder(turn.ALLOCATE, MessageClass.REQUEST)
    builder.add(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17))
    builder.add_text(stun.USERNAME, username)
    builder.add_text(stun.REALM, REALM)
    builder.add_text(stun.NONCE, authenticator.nonces.issue(CLIENT, WALL))
    key = long_term_key(username, REALM, password)
    return stun.parse(builder.encode(integrity_key=key, fingerprint=True))


@pytest.mark.parametrize("secrets", [(), ("rest-secret",)])
def test_unknown_and_known_users_do_the_same_integrity_work(
    monkeypatch: pytest.MonkeyPatch, secrets: tuple[str, ...]
) -> None:
    authenticator = Authenticator(Credentials(REALM, [("alice", "wonderland")], secrets))
    calls: list[bytes] = []
    real = stun.verify_integrity

    def counting(message: Any, key: bytes) -> bool:
        calls.append(key)
        return real(message, key)

    monkeypatch.setattr(auth, "verify_integrity", counting)
    for username, password in [("alice", "wrong"), ("mallory", "wrong"), ("999999:x", "y")]:
        calls.clear()
        result = authenticator.check(request(authenticator, username, password), CLIENT, WALL)
        assert result.status is AuthStatus.UNAUTHORIZED, username
        assert len(calls) == 1, username
    calls.clear()
    good = authenticator.check(request(authenticator, "alice", "wonderland"), CLIENT, WALL)
    assert good.ok and len(calls) == 1
