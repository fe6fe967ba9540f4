"""Allocation table: lifetimes, permissions, channels, heap expiry, quotas; port pool."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.allocation import (
    ANONYMOUS_REST,
    Allocation,
    AllocationTable,
    FiveTuple,
    Lifetimes,
    quota_key,
)
from relay.core.ports import PortPool, parse_port_range
from relay.proto.stun import FAMILY_IPV4
from tests.relay.test_handler import FakeEndpoint, Link

SERVER = ("127.0.0.1", 3478)
PEER = ("192.0.2.10", 5000)


def five(port: int, transport: str = "udp") -> FiveTuple:
    return FiveTuple(transport, ("198.51.100.1", port), SERVER)


def make(
    table: AllocationTable, port: int = 1000, *, user: str = "alice", lifetime: int = 600
) -> Allocation:
    allocation = Allocation(
        five(port),
        user,
        relay=FakeEndpoint(("127.0.0.1", 50000 + port % 1000)),
        link=Link(),
        family=FAMILY_IPV4,
        created=0.0,
        lifetime=lifetime,
    )
    return table.add(allocation)


# --- lifetimes ---------------------------------------------------------------------------------


def test_lifetimes_follow_rfc_8656() -> None:
    lifetimes = Lifetimes()
    assert lifetimes.grant(None) == 600
    assert lifetimes.grant(60) == 600  # never below the default
    assert lifetimes.grant(1200) == 1200
    assert lifetimes.grant(100_000) == 3600  # capped at the maximum


def test_short_maximum_caps_the_default() -> None:
    lifetimes = Lifetimes(max_lifetime=2)
    assert lifetimes.default == 2
    assert lifetimes.grant(None) == 2
    assert lifetimes.grant(600) == 2
    with pytest.raises(ValueError):
        Lifetimes(max_lifetime=0)


def test_quota_keys_are_unambiguous() -> None:
    assert quota_key("alice", static=True) == "static:alice"
    assert quota_key("1763701000:alice") == "rest:alice"
    # A REST user id never shares a static user's quota.
    assert quota_key("1763701000:alice") != quota_key("alice", static=True)
    # Every anonymous REST credential shares one budget, fresh or not.
    assert quota_key("1763701000") == quota_key("1763709999") == ANONYMOUS_REST
    assert quota_key("1763701000:") == ANONYMOUS_REST
    # A static user whose name is all digits is still a static user.
    assert quota_key("1763701000", static=True) == "static:1763701000"


# --- table -------------------------------------------------------------------------------------


def test_add_get_remove_and_counts() -> None:
    table = AllocationTable()
    a = make(table, 1)
    b = table.add(
        Allocation(
            five(2, "tcp"),
            "bob",
            relay=FakeEndpoint(("127.0.0.1", 2)),
            link=Link("tcp"),
            family=FAMILY_IPV4,
            created=0.0,
            lifetime=600,
        )
    )
    assert table.get(five(1)) is a
    assert table.get(five(2, "tcp")) is b
    assert (len(table), table.count("udp"), table.count("tcp")) == (2, 1, 1)
    with pytest.raises(ValueError):
        make(table, 1)
    assert table.remove(a)
    assert not table.remove(a)
    assert table.get(five(1)) is None
    assert (len(table), table.count("udp"), table.user_count("alice")) == (1, 0, 0)


def test_allocation_expires_after_its_lifetime() -> None:
    table = AllocationTable()
    a = make(table, lifetime=600)
    assert table.expire(599.9) == []
    assert table.expire(600.0) == [a]
    assert a.removed and len(table) == 0
    assert table.expire(10_000) == []


def test_refresh_longer_costs_no_heap_entry_and_is_honoured() -> None:
    table = AllocationTable()
    a = make(table, lifetime=600)
    size = table.heap_size
    table.refresh(a, 1200, now=500.0)
    assert table.heap_size == size
    assert table.expire(600.0) == []  # the early entry fires and reschedules
    assert table.next_deadline() == 1700.0
    assert table.expire(1700.0) == [a]


def test_refresh_shorter_moves_expiry_earlier() -> None:
    table = AllocationTable()
    a = make(table, lifetime=3600)
    table.refresh(a, 600, now=10.0)
    assert table.expire(609.0) == []
    assert table.expire(610.0) == [a]


def test_permissions_expire_before_the_allocation() -> None:
    table = AllocationTable()
    a = make(table, lifetime=3600)
    table.add_permission(a, "192.0.2.10", now=0.0)
    table.add_permission(a, "192.0.2.11", now=100.0)
    assert table.next_deadline() == 300.0
    table.expire(300.0)
    assert set(a.permissions) == {"192.0.2.11"}
    table.expire(400.0)
    assert a.permissions == {}
    assert table.next_deadline() == 3600.0
    assert len(table) == 1


def test_refreshed_permission_survives() -> None:
    table = AllocationTable()
    a = make(table, lifetime=3600)
    table.add_permission(a, "192.0.2.10", now=0.0)
    table.add_permission(a, "192.0.2.10", now=250.0)
    table.expire(300.0)
    assert "192.0.2.10" in a.permissions
    table.expire(550.0)
    assert a.permissions == {}


def test_channel_binding_both_ways_and_its_permission() -> None:
    table = AllocationTable()
    a = make(table, lifetime=3600)
    assert table.bind_channel(a, 0x4000, PEER, now=0.0)
    assert a.channels[0x4000].peer == PEER
    assert a.peers[PEER].channel == 0x4000
    assert a.permissions[PEER[0]] == 300.0
    # Refreshing the same pair is fine; a different pairing is refused and changes nothing.
    assert table.bind_channel(a, 0x4000, PEER, now=10.0)
    assert not table.bind_channel(a, 0x4001, PEER, now=10.0)
    assert not table.bind_channel(a, 0x4000, ("192.0.2.99", 1), now=10.0)
    assert set(a.channels) == {0x4000}
    # The permission lapses at 310 s, the channel at 610 s.
    table.expire(310.0)
    assert a.permissions == {} and 0x4000 in a.channels
    table.expire(610.0)
    assert a.channels == {} and a.peers == {}
    # Unbound: the channel and the peer can be bound anew.
    assert table.bind_channel(a, 0x4001, PEER, now=700.0)


def test_removed_allocation_heap_entry_is_skipped() -> None:
    table = AllocationTable()
    a = make(table, lifetime=600)
    table.remove(a)
    assert table.expire(1000.0) == []


def test_heap_stays_about_one_entry_per_allocation() -> None:
    table = AllocationTable()
    allocations = [make(table, port) for port in range(100)]
    for step in range(1, 50):
        now = step * 10.0
        for allocation in allocations:
            table.refresh(allocation, 600, now)
            table.add_permission(allocation, "192.0.2.10", now)
        table.expire(now)
    assert table.heap_size <= 2 * len(allocations)


def test_quotas() -> None:
    table = AllocationTable(user_quota=2, total_quota=3)
    make(table, 1, user="1000:alice")
    assert not table.quota_exceeded(quota_key("2000:alice"))
    make(table, 2, user="2000:alice")
    assert table.quota_exceeded(quota_key("3000:alice"))  # same REST user id
    assert not table.quota_exceeded(quota_key("bob", static=True))
    make(table, 3, user="bob")
    assert table.quota_exceeded(quota_key("carol", static=True))  # total
    unlimited = AllocationTable()
    for port in range(10):
        make(unlimited, port)
    assert not unlimited.quota_exceeded(quota_key("alice", static=True))


def test_reservations_count_against_the_quotas_until_claimed_or_lapsed() -> None:
    table = AllocationTable(user_quota=2, total_quota=3)
    alice = quota_key("1000:alice")
    make(table, 1, user="1000:alice")
    table.reserved(b"token-1", alice, expiry=30.0)
    # The reserved port is held like an allocation's: alice is at her quota.
    assert table.quota_exceeded(alice, now=1.0)
    # Claiming her own reservation does not need another unit of quota.
    assert not table.quota_exceeded(alice, now=1.0, claiming=b"token-1")
    table.reserved(b"token-2", quota_key("bob", static=True), expiry=30.0)
    assert table.quota_exceeded(quota_key("carol", static=True), now=1.0)  # 1 + 2 held = total
    # Lapsed reservations hold nothing, swept or not.
    assert not table.quota_exceeded(alice, now=31.0)
    table.expire(31.0)
    assert not table.quota_exceeded(alice, now=31.0)
    table.reserved(b"token-3", alice, expiry=60.0)
    table.unreserved(b"token-3")
    assert not table.quota_exceeded(alice, now=32.0)
    with pytest.raises(ValueError):
        AllocationTable(user_quota=-1)


def test_clear_returns_everything() -> None:
    table = AllocationTable()
    every = [make(table, port) for port in range(3)]
    assert sorted(a.id for a in table.clear()) == sorted(a.id for a in every)
    assert len(table) == 0 and table.heap_size == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["refresh", "permission", "channel", "expire", "remove"]),
            st.integers(0, 4),
            st.integers(1, 900),
        ),
        max_size=60,
    )
)
def test_expiry_matches_a_naive_model(operations: list[tuple[str, int, int]]) -> None:
    """Whatever the order of refreshes, the table expires exactly what a naive model would."""
    table = AllocationTable()
    allocations = [make(table, index, lifetime=600) for index in range(5)]
    expiry = {a.id: 600.0 for a in allocations}
    alive = {a.id for a in allocations}
    permissions: dict[str, dict[str, float]] = {a.id: {} for a in allocations}
    now = 0.0
    for operation, index, value in operations:
        allocation = allocations[index]
        if operation == "expire":
            now += value
            gone = {a.id for a in table.expire(now)}
            assert gone == {i for i in alive if expiry[i] <= now}
            alive -= gone
            for a in allocations:
                model = permissions[a.id]
                for ip in [ip for ip, until in model.items() if until <= now]:
                    del model[ip]
                if a.id in alive:
                    assert set(a.permissions) == set(model)
        elif allocation.id not in alive:
            continue
        elif operation == "refresh":
            table.refresh(allocation, value, now)
            expiry[allocation.id] = now + value
        elif operation == "permission":
            ip = f"192.0.2.{value % 4}"
            table.add_permission(allocation, ip, now)
            permissions[allocation.id][ip] = now + 300
        elif operation == "channel":
            table.bind_channel(allocation, 0x4000, PEER, now)
            permissions[allocation.id][PEER[0]] = now + 300
        else:
            table.remove(allocation)
            alive.discard(allocation.id)


# --- ports -------------------------------------------------------------------------------------


def test_port_range_parsing() -> None:
    assert parse_port_range("49152-65535") == (49152, 65535)
    assert parse_port_range("5000-5000") == (5000, 5000)
    for bad in ("", "5000", "6000-5000", "0-10", "1-70000", "a-b", "-1-5"):
        with pytest.raises(ValueError):
            parse_port_range(bad)


def test_port_pool_hands_out_each_port_once() -> None:
    pool = PortPool(5000, 5009, random.Random(1))
    ports = {pool.acquire() for _ in range(10)}
    assert ports == set(range(5000, 5010))
    assert pool.acquire() is None
    pool.release(5003)
    assert pool.acquire() == 5003
    assert len(pool) == 10 and pool.capacity == 10


def test_port_pool_even_ports_and_pairs() -> None:
    pool = PortPool(5000, 5005, random.Random(2))
    even = pool.acquire(even=True)
    assert even is not None and even % 2 == 0
    pair = pool.acquire_pair()
    assert pair is not None and pair % 2 == 0 and pair + 1 in pool
    assert pool.acquire(avoid=frozenset(range(5000, 5006))) is None
    assert pool.acquire_pair() is None or len(pool) <= 6
