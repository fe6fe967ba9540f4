"""Fleet state: idempotence, instances, staleness and expiry, with an injected clock."""

import pytest

from scaler.fleet import REPLAY_WINDOW, FleetFull, FleetState, Outcome
from scaler.wire import Event, ReportError
from tests.reports import created, deleted, report


def new_fleet(max_relays: int = 10) -> FleetState:
    return FleetState(stale_after=15.0, expire_after=60.0, max_relays=max_relays)


def test_first_report_is_accepted_and_counts() -> None:
    fleet = new_fleet()
    assert fleet.apply(report(udp=40, tcp=2), now=0.0) is Outcome.ACCEPTED
    assert fleet.select().allocations == 42
    assert fleet.select("stunner-gateway").relays == 1
    assert fleet.select("other-gateway").allocations == 0


def test_repeated_and_older_seq_are_duplicates_and_change_nothing() -> None:
    fleet = new_fleet()
    fleet.apply(report(seq=5, udp=10, events=[created()]), now=0.0)
    assert fleet.apply(report(seq=5, udp=99, events=[created()]), now=1.0) is Outcome.DUPLICATE
    relay = fleet.get("stunner", "relay-a")
    assert relay is not None
    assert relay.allocations == 10
    assert relay.created == {"udp": 1}
    assert relay.last_seen == 0.0


def test_late_report_counts_its_events_once_but_not_its_snapshot() -> None:
    fleet = new_fleet()
    fleet.apply(report(seq=1, udp=1, events=[created("a")]), now=0.0)
    fleet.apply(report(seq=3, udp=3, events=[created("c")]), now=1.0)
    late = report(seq=2, udp=2, events=[created("b")])
    assert fleet.apply(late, now=2.0) is Outcome.LATE
    assert fleet.apply(late, now=3.0) is Outcome.DUPLICATE
    relay = fleet.get("stunner", "relay-a")
    assert relay is not None
    assert relay.created == {"udp": 3}
    assert relay.allocations == 3


def test_reports_beyond_the_replay_window_are_ignored() -> None:
    fleet = new_fleet()
    fleet.apply(report(seq=REPLAY_WINDOW + 2), now=0.0)
    outcome = fleet.apply(report(seq=1, events=[created()]), now=0.0)
    assert outcome is Outcome.DUPLICATE
    assert fleet.apply(report(seq=2, events=[created()]), now=0.0) is Outcome.LATE


def test_new_instance_replaces_old_and_counters_stay_monotonic() -> None:
    fleet = new_fleet()
    fleet.apply(report(seq=9, udp=5, connections={"udp": 100}, sent={"client": 1000}), 0.0)
    restarted = report(
        seq=1, instance="inst2", started_at=2e9, udp=1, connections={"udp": 3}, sent={"peer": 7}
    )
    assert fleet.apply(restarted, now=1.0) is Outcome.ACCEPTED
    relay = fleet.get("stunner", "relay-a")
    assert relay is not None
    totals = relay.totals()
    assert totals.connections == {"udp": 103}
    assert totals.bytes_sent == {"client": 1000, "peer": 7}
    assert relay.allocations == 1


def test_report_from_an_older_instance_is_ignored() -> None:
    fleet = new_fleet()
    fleet.apply(report(instance="new", started_at=2e9, udp=1), now=0.0)
    old = report(instance="old", started_at=1e9, seq=50, udp=70)
    assert fleet.apply(old, now=1.0) is Outcome.OLD_INSTANCE
    assert fleet.select().allocations == 1


def test_totals_going_down_within_an_instance_is_rejected_whole() -> None:
    fleet = new_fleet()
    fleet.apply(report(seq=1, udp=1, received={"client": 500}), now=0.0)
    with pytest.raises(ReportError, match=r"bytes_received_total\.client"):
        fleet.apply(report(seq=2, udp=9, received={"client": 10}), now=1.0)
    assert fleet.select().allocations == 1


def test_draining_relays_are_kept_but_not_counted_for_scaling() -> None:
    fleet = new_fleet()
    fleet.apply(report("relay-a", udp=30), now=0.0)
    fleet.apply(report("relay-b", udp=20, draining=True), now=0.0)
    assert fleet.select().allocations == 30
    assert fleet.select().relays == 1
    assert len(fleet) == 2


def test_stale_relay_is_not_up_but_still_counts() -> None:
    fleet = new_fleet()
    fleet.apply(report(udp=7), now=0.0)
    relay = fleet.get("stunner", "relay-a")
    assert relay is not None
    assert fleet.is_up(relay, now=15.0)
    assert not fleet.is_up(relay, now=15.1)
    assert fleet.expire(now=59.0) == []
    assert fleet.select().allocations == 7


def test_expired_relay_leaves_totals_and_keeps_counters_on_comeback() -> None:
    fleet = new_fleet()
    fleet.apply(report(seq=4, udp=7, connections={"udp": 50}, events=[deleted()]), now=0.0)
    before = fleet.generation
    assert fleet.expire(now=60.5) == [("stunner", "relay-a")]
    assert fleet.generation > before
    assert fleet.select().allocations == 0
    assert fleet.get("stunner", "relay-a") is None
    comeback = report(seq=1, instance="inst2", started_at=2e9, udp=1, connections={"udp": 2})
    fleet.apply(comeback, now=70.0)
    relay = fleet.get("stunner", "relay-a")
    assert relay is not None
    assert relay.totals().connections == {"udp": 52}
    assert relay.deleted == {("udp", "refresh_zero"): 1}


def test_same_instance_returning_after_expiry_is_not_double_counted() -> None:
    fleet = new_fleet()
    fleet.apply(report(seq=1, connections={"udp": 50}), now=0.0)
    fleet.expire(now=100.0)
    fleet.apply(report(seq=2, connections={"udp": 60}), now=101.0)
    relay = fleet.get("stunner", "relay-a")
    assert relay is not None
    assert relay.totals().connections == {"udp": 60}


def test_removed_pod_leaves_at_once() -> None:
    fleet = new_fleet()
    fleet.apply(report(udp=3), now=0.0)
    assert fleet.remove("stunner", "relay-a")
    assert not fleet.remove("stunner", "relay-a")
    assert fleet.select().allocations == 0


def test_max_relays_refuses_new_relays_but_not_known_ones() -> None:
    fleet = new_fleet(max_relays=2)
    fleet.apply(report("relay-a"), now=0.0)
    fleet.apply(report("relay-b"), now=0.0)
    with pytest.raises(FleetFull):
        fleet.apply(report("relay-c", udp=5), now=0.0)
    assert len(fleet) == 2
    assert fleet.apply(report("relay-a", seq=2, udp=1), now=1.0) is Outcome.ACCEPTED
    fleet.expire(now=100.0)
    fleet.apply(report("relay-c", udp=5), now=101.0)
    assert fleet.select().allocations == 5


def test_events_feed_lifecycle_counters_and_duration_histogram() -> None:
    fleet = new_fleet()
    events: list[Event] = [
        created("a"),
        created("b", "tcp"),
        deleted("a", duration=0.5),
        deleted("b", "tcp", "expired", 700.0),
    ]
    fleet.apply(report(events=events), now=0.0)
    relay = fleet.get("stunner", "relay-a")
    assert relay is not None
    assert relay.created == {"udp": 1, "tcp": 1}
    assert relay.deleted == {("udp", "refresh_zero"): 1, ("tcp", "expired"): 1}
    histograms = dict(fleet.durations())
    udp = histograms[("stunner", "stunner-gateway", "udp")]
    assert (udp.count, udp.total, udp.buckets[0]) == (1, 0.5, 1)
    tcp = histograms[("stunner", "stunner-gateway", "tcp")]
    assert tcp.buckets[7] == 0  # 600 s bucket
    assert tcp.buckets[8] == 1  # 1800 s bucket


def test_generation_moves_only_when_scaling_inputs_change() -> None:
    fleet = new_fleet()
    fleet.apply(report(seq=1, udp=1), now=0.0)
    first = fleet.generation
    fleet.apply(report(seq=2, udp=1, connections={"udp": 5}), now=1.0)
    assert fleet.generation == first
    fleet.apply(report(seq=3, udp=2, connections={"udp": 5}), now=2.0)
    assert fleet.generation == first + 1
    fleet.apply(report(seq=4, udp=2, connections={"udp": 5}, draining=True), now=3.0)
    assert fleet.generation == first + 2


def test_gateways_in_different_namespaces_are_separate_fleets() -> None:
    fleet = new_fleet()
    fleet.apply(report("a", namespace="team-1", udp=10), now=0.0)
    fleet.apply(report("a", namespace="team-2", udp=20), now=0.0)
    assert fleet.select("stunner-gateway", "team-1").allocations == 10
    assert fleet.select("stunner-gateway").allocations == 30
    assert fleet.gateways() == {("team-1", "stunner-gateway"), ("team-2", "stunner-gateway")}
