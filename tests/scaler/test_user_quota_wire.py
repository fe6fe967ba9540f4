"""The additions stay version 1: a scaler of the first release takes today's reports.

``tests/fixtures/wire_v1_first.py`` is ``scaler/wire.py`` as first released (54ff68d).
msgspec skips fields a Struct does not name, so the old decoder must accept a report with
``state.users`` and ignore it, and it must take the ``tls``/``dtls`` transport keys.
"""

from __future__ import annotations

import msgspec
import pytest

from scaler import wire
from tests.fixtures import wire_v1_first as first
from tests.reports import created, report


def new_report(**users: int) -> wire.Report:
    base = report("relay-a", seq=3, udp=2, tcp=1)
    digests = {wire.user_digest(key): count for key, count in users.items()}
    state = msgspec.structs.replace(base.state, users=wire.users_field(digests))
    return msgspec.structs.replace(base, state=state)


def test_the_first_release_decodes_a_report_with_users_and_ignores_them() -> None:
    body = wire.encode(new_report(**{"rest:alice": 2, "static:bob": 1}))
    assert b'"users"' in body
    old = first.decode(body)
    assert old.seq == 3 and old.state.allocations == {"udp": 2, "tcp": 1}
    assert not hasattr(old.state, "users")
    # And it decodes everything else exactly as today's decoder does.
    today = wire.decode(body)
    assert msgspec.to_builtins(old.relay) == msgspec.to_builtins(today.relay)
    assert old.state.connections_total == today.state.connections_total


def test_the_first_release_skips_refusal_counts_too() -> None:
    base = new_report(**{"rest:alice": 1})
    state = msgspec.structs.replace(base.state, refused_total={"fleet_user_quota": 2})
    body = wire.encode(msgspec.structs.replace(base, state=state))
    assert b'"refused_total"' in body
    assert first.decode(body).state.allocations == {"udp": 2, "tcp": 1}
    assert wire.decode(body).state.refused_total == {"fleet_user_quota": 2}


def test_the_first_release_takes_tls_and_dtls_transports() -> None:
    base = report("relay-a", udp=1, tcp=1, connections={"udp": 3, "tcp": 2, "tls": 4, "dtls": 1})
    state = msgspec.structs.replace(
        base.state, allocations={"udp": 1, "tcp": 1, "tls": 2, "dtls": 1}
    )
    events: list[wire.Event] = [created("t1", "tls"), created("d1", "dtls")]
    body = wire.encode(msgspec.structs.replace(base, state=state, events=events))
    old = first.decode(body)
    assert old.state.allocations == {"udp": 1, "tcp": 1, "tls": 2, "dtls": 1}
    assert old.state.connections_total["tls"] == 4
    assert [event.transport for event in old.events] == ["tls", "dtls"]


def test_a_report_without_users_is_byte_for_byte_what_the_first_release_sent() -> None:
    today = report("relay-a", seq=2, udp=4, events=[created()])
    old = first.decode(wire.encode(today))
    assert first.encode(old) == wire.encode(today)


def test_the_user_digest_is_fixed_size_and_keeps_names_out() -> None:
    long_name = "static:" + "x" * 513
    digests = {wire.user_digest(key) for key in ("rest:alice", "static:alice", "rest:", long_name)}
    assert len(digests) == 4  # a REST id never shares a static user's budget
    for digest in digests:
        assert len(digest) == wire.DIGEST_LENGTH and "alice" not in digest
    # The same on every relay: a fixed function of the quota key, no per-process key.
    assert wire.user_digest("rest:alice") == "f62c8bfd728197e4"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"result": "accepted"}',
        b'{"over_quota": null}',
        b'{"over_quota": {"version": 2, "users": ["' + b"0" * 16 + b'"]}}',
        b'{"over_quota": {"version": 1, "users": ["rest:alice"]}}',
        b'{"over_quota": {"version": 1, "users": "' + b"0" * 16 + b'"}}',
        b"[" * 100_000,
    ],
)
def test_an_answer_without_a_valid_list_lists_nobody(body: bytes) -> None:
    assert wire.over_quota_from(body) is None


def test_an_answer_list_decodes_with_unknown_keys_around_it() -> None:
    digest = wire.user_digest("rest:alice")
    body = msgspec.json.encode(
        {
            "result": "accepted",
            "seq": 9,
            "later": {"x": [1, 2]},
            "over_quota": {"version": 1, "users": [digest], "truncated": True, "more": 1},
        }
    )
    quota = wire.over_quota_from(body)
    assert quota is not None and quota.users == [digest] and quota.truncated


def test_an_over_long_answer_list_lists_nobody() -> None:
    users = [wire.user_digest(f"rest:{n}") for n in range(wire.MAX_OVER_QUOTA + 1)]
    body = msgspec.json.encode({"over_quota": {"version": 1, "users": users}})
    assert wire.over_quota_from(body) is None
