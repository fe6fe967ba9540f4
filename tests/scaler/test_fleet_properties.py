"""Property tests: delivery order and repeats never change the outcome or lower a counter.

The wire contract (:mod:`scaler.wire`) makes every report a full snapshot, so a relay's state
after any repeated and reordered delivery of one instance's reports equals the
in-order result, events included (the replay window counts each report once).
Across instances, a report from an older instance is ignored by contract, so
there only monotonicity is promised.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from scaler import wire
from scaler.fleet import FleetState
from tests.reports import T0, created, deleted, report

PODS = ("relay-a", "relay-b")


@st.composite
def instance_reports(draw: st.DrawFn, pod: str, index: int) -> list[wire.Report]:
    """One relay instance's in-order reports with growing totals and some events."""
    count = draw(st.integers(1, 8))
    totals = {"conn": 0, "rc": 0, "rp": 0, "sc": 0, "sp": 0}
    out = []
    for seq in range(1, count + 1):
        for key in totals:
            totals[key] += draw(st.integers(0, 1000))
        kinds = draw(st.lists(st.sampled_from(["created", "deleted", "expired"]), max_size=3))
        events: list[wire.Event] = []
        for n, kind in enumerate(kinds):
            name = f"{index}-{seq}-{n}"
            if kind == "created":
                events.append(created(name, draw(st.sampled_from(["udp", "tcp"]))))
            else:
                reason: wire.DeleteReason = "refresh_zero" if kind == "deleted" else "expired"
                duration = draw(st.floats(0, 10_000, allow_nan=False))
                events.append(deleted(name, reason=reason, duration=duration))
        out.append(
            report(
                pod,
                seq=seq,
                instance=f"i{index}",
                started_at=T0 + index * 1000,
                udp=draw(st.integers(0, 500)),
                tcp=draw(st.integers(0, 50)),
                draining=draw(st.booleans()),
                connections={"udp": totals["conn"]},
                received={"client": totals["rc"], "peer": totals["rp"]},
                sent={"client": totals["sc"], "peer": totals["sp"]},
                events=events,
            )
        )
    return out


@st.composite
def pod_history(draw: st.DrawFn, pod: str) -> list[list[wire.Report]]:
    return [draw(instance_reports(pod, index)) for index in range(draw(st.integers(1, 3)))]


def fleet_view(fleet: FleetState) -> Any:
    relays = {}
    for relay in fleet.relays():
        totals = relay.totals()
        relays[(relay.identity.namespace, relay.identity.pod)] = (
            relay.identity,
            relay.seq,
            relay.state,
            relay.draining,
            totals.connections,
            totals.bytes_received,
            totals.bytes_sent,
            relay.created,
            relay.deleted,
        )
    durations = {
        key: (tuple(h.buckets), h.count, round(h.total, 6)) for key, h in fleet.durations()
    }
    return relays, durations


def counters(fleet: FleetState) -> dict[tuple[Any, ...], int]:
    values: dict[tuple[Any, ...], int] = {}
    for relay in fleet.relays():
        pod = relay.identity.pod
        totals = relay.totals()
        named: tuple[tuple[str, dict[Any, int]], ...] = (
            ("conn", totals.connections),
            ("recv", totals.bytes_received),
            ("sent", totals.bytes_sent),
            ("created", relay.created),
            ("deleted", relay.deleted),
        )
        for name, series in named:
            for key, value in series.items():
                values[(pod, name, key)] = value
    for key, histogram in fleet.durations():
        values[("histogram", *key)] = histogram.count
    return values


def apply_all(reports: list[wire.Report]) -> FleetState:
    fleet = FleetState(stale_after=15, expire_after=60, max_relays=10)
    for item in reports:
        fleet.apply(item, now=0.0)
    return fleet


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_repeats_and_reordering_within_an_instance_change_nothing(data: st.DataObject) -> None:
    histories = {pod: data.draw(pod_history(pod)) for pod in PODS}
    in_order = [r for pod in PODS for instance in histories[pod] for r in instance]

    # Per pod: each instance's reports shuffled and repeated, instances kept in order.
    queues: dict[str, list[wire.Report]] = {}
    for pod in PODS:
        queues[pod] = []
        for instance in histories[pod]:
            delivered = data.draw(st.permutations(instance))
            repeats = data.draw(st.lists(st.sampled_from(instance), max_size=4))
            queues[pod].extend(data.draw(st.permutations([*delivered, *repeats])))
    # Pods interleave arbitrarily.
    shuffled: list[wire.Report] = []
    while any(queues.values()):
        pod = data.draw(st.sampled_from([p for p in PODS if queues[p]]))
        shuffled.append(queues[pod].pop(0))

    assert fleet_view(apply_all(shuffled)) == fleet_view(apply_all(in_order))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_no_delivery_order_ever_lowers_an_exported_counter(data: st.DataObject) -> None:
    history = data.draw(pod_history("relay-a"))
    everything = [r for instance in history for r in instance]
    repeats = data.draw(st.lists(st.sampled_from(everything), max_size=6))
    delivery = data.draw(st.permutations([*everything, *repeats]))
    fleet = FleetState(stale_after=15, expire_after=60, max_relays=10)
    seen: dict[tuple[Any, ...], int] = {}
    for step, item in enumerate(delivery):
        fleet.apply(item, now=float(step))
        if data.draw(st.booleans()):
            fleet.expire(now=step + 61.0)  # expiry and comeback must not lower counters
        now = counters(fleet)
        for key, value in seen.items():
            if key in now:
                assert now[key] >= value, key
        seen.update(now)
