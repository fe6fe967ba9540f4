"""Quotas that bite (RFC 8656 §7.2: 486 Allocation Quota Reached), found by an attack round:
EVEN-PORT reservations held ports outside every quota, every anonymous REST credential was
a fresh quota of its own, and a REST user id equal to a static user's name shared its quota.
"""

from __future__ import annotations

import itertools
import time

from relay.core.allocation import AllocationTable
from relay.core.auth import rest_password
from relay.proto import turn
from tests.relay.test_handler import SECRET, Client, FakeEndpoint, FakeRelays, code, make_handler


class ReservingRelays(FakeRelays):
    """Relayed endpoints whose reservations each get their own token."""

    def __init__(self) -> None:
        super().__init__()
        self._tokens = itertools.count(1)

    def reserve_pair(
        self, family: int, *, dont_fragment: bool, now: float
    ) -> tuple[FakeEndpoint, bytes] | None:
        pair = super().reserve_pair(family, dont_fragment=dont_fragment, now=now)
        if pair is None:
            return None
        endpoint, token = pair
        unique = next(self._tokens).to_bytes(8, "big")
        self.tokens[unique] = self.tokens.pop(token)
        return endpoint, unique


def rest_client(handler: object, user_id: str, n: int) -> Client:
    username = f"{int(time.time()) + 600}:{user_id}" if user_id else str(int(time.time()) + 600 + n)
    return Client(
        handler,  # type: ignore[arg-type]
        username,
        rest_password(SECRET, username),
        client=("198.51.100.7", 40000 + n),
    )


def test_even_port_reservations_count_against_the_user_quota() -> None:
    relays = ReservingRelays()
    handler, _, _ = make_handler(relays=relays, table=AllocationTable(user_quota=2))
    reserve = (turn.EVEN_PORT, turn.encode_even_port(True))
    answers = []
    for n in range(5):
        client = Client(handler, client=("198.51.100.7", 41000 + n))
        response = client.allocate(reserve)
        answers.append(code(response))
        if answers[-1] == 200:
            # Cycle: drop the allocation, keep the reserved port, try again.
            assert (
                code(client.request(turn.REFRESH, [(turn.LIFETIME, turn.encode_lifetime(0))]))
                == 200
            )
    # The first allocation and its reservation are two ports. Dropping the allocation keeps
    # the reserved one, so another allocation with a reservation would hold three: 486
    # until the reservation lapses. Without the fix every one got 200.
    assert answers == [200, 486, 486, 486, 486]


def test_claiming_its_own_reservation_needs_no_more_quota() -> None:
    relays = ReservingRelays()
    handler, _, _ = make_handler(relays=relays, table=AllocationTable(user_quota=2))
    first = Client(handler, client=("198.51.100.7", 42000))
    response = first.allocate((turn.EVEN_PORT, turn.encode_even_port(True)))
    token = response.get(turn.RESERVATION_TOKEN)
    assert token is not None
    second = Client(handler, client=("198.51.100.7", 42001))
    assert code(second.allocate((turn.RESERVATION_TOKEN, token))) == 200  # 2 of 2, not 3


def test_anonymous_rest_credentials_share_one_budget() -> None:
    handler, _, _ = make_handler(table=AllocationTable(user_quota=3))
    answers = [code(rest_client(handler, "", n).allocate()) for n in range(6)]
    # Each anonymous username (EXPIRY alone) differs, yet they are one budget.
    assert answers == [200, 200, 200, 486, 486, 486]


def test_a_rest_user_id_never_shares_a_static_users_quota() -> None:
    handler, _, _ = make_handler(table=AllocationTable(user_quota=1))
    assert code(Client(handler, client=("198.51.100.7", 43000)).allocate()) == 200  # static alice
    # REST user id "alice" is another identity: its own quota, not the static user's.
    assert code(rest_client(handler, "alice", 1).allocate()) == 200
    assert code(rest_client(handler, "alice", 2).allocate()) == 486
