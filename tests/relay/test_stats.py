"""RelayStats: what the next issue's report pusher reads."""

from __future__ import annotations

from relay.core.stats import RelayStats
from relay.reporting.pusher import StateSource
from scaler import wire

AT = 1_763_701_000.0


def test_snapshot_is_a_wire_state() -> None:
    stats = RelayStats(started_at=AT, started_monotonic=10.0)
    stats.connection_accepted("tcp")
    stats.allocation_created("a1", "udp", AT)
    stats.allocation_created("a2", "tcp", AT)
    stats.client_rx, stats.client_tx, stats.peer_rx, stats.peer_tx = 10, 20, 30, 40
    state = stats.snapshot()
    assert state == wire.RelayState(
        allocations={"udp": 1, "tcp": 1},
        connections_total={"udp": 1, "tcp": 1},
        bytes_received_total={"client": 10, "peer": 30},
        bytes_sent_total={"client": 20, "peer": 40},
    )
    stats.allocation_deleted(
        "a1", "udp", AT + 5, reason="expired", duration=5.0, bytes_received=3, bytes_sent=4
    )
    assert stats.snapshot().allocations == {"udp": 0, "tcp": 1}
    assert stats.uptime(12.5) == 2.5


def test_subscribers_hear_every_change() -> None:
    stats = RelayStats()
    calls: list[int] = []
    unsubscribe = stats.subscribe(lambda: calls.append(1))
    stats.allocation_created("a", "udp", AT)
    stats.allocation_deleted(
        "a", "udp", AT, reason="refresh_zero", duration=0.1, bytes_received=0, bytes_sent=0
    )
    stats.set_draining()
    assert len(calls) == 3 and stats.draining
    unsubscribe()
    stats.allocation_created("b", "udp", AT)
    assert len(calls) == 3


def test_event_subscribers_get_each_event() -> None:
    stats = RelayStats()
    seen: list[wire.Event] = []
    unsubscribe = stats.subscribe_events(seen.append)
    stats.allocation_created("a", "tcp", AT)
    assert seen == [wire.AllocationCreated(at=AT, allocation="a", transport="tcp")]
    assert not hasattr(stats, "events")  # handed on, never kept here
    unsubscribe()
    stats.allocation_created("b", "tcp", AT)
    assert len(seen) == 1


def test_stats_are_the_pushers_state_source() -> None:
    source: StateSource = RelayStats()  # checked by mypy
    assert source.draining is False
    assert source.snapshot().allocations == {"udp": 0, "tcp": 0}
