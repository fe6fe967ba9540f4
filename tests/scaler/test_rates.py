"""Relayed bytes per second from reports (scaler/rates.py): unit cases, then properties
over every delivery order (permutations, repeats, drops, relay restarts)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler import wire
from scaler.fleet import FleetState
from scaler.rates import MAX_SAMPLES, RelayRates
from tests.reports import T0
from tests.scaler.helpers import traffic_report as sample

KEY = ("stunner", "relay-a")
WINDOW = 30.0


def test_the_rate_is_the_busier_direction_over_the_window() -> None:
    rates: RelayRates[tuple[str, str]] = RelayRates(WINDOW)
    # First seen 100 s after it started: no rate until a second report.
    rates.observe(KEY, sample(1, T0 + 100, 1_000_000, 900_000))
    assert rates.rate(KEY) == 0.0
    rates.observe(KEY, sample(2, T0 + 105, 6_000_000, 5_400_000))
    assert rates.rate(KEY) == 1_000_000  # received grew 5 MB in 5 s; sent only 4.5 MB
    rates.observe(KEY, sample(3, T0 + 110, 7_000_000, 14_400_000))
    assert rates.rate(KEY) == pytest.approx(13_500_000 / 10)  # now sent is busier


def test_repeats_late_and_older_instance_reports_change_nothing() -> None:
    rates: RelayRates[tuple[str, str]] = RelayRates(WINDOW)
    first, second, third = (sample(n, T0 + 100 + 5 * n, 1_000_000 * n * n) for n in (1, 2, 3))
    for item in (first, second, third):
        rates.observe(KEY, item)
    held = rates.rate(KEY)
    assert held > 0
    for replay in (third, second, first, third):
        rates.observe(KEY, replay)
        assert rates.rate(KEY) == held
    # A new instance's report, then a straggler of the old one: the new instance holds.
    rates.observe(KEY, sample(1, T0 + 300, 2_000_000, instance="inst2", started_at=T0 + 298))
    assert rates.rate(KEY) == 1_000_000  # 2 MB in the 2 s since it started
    rates.observe(KEY, sample(4, T0 + 301, 99_000_000))
    assert rates.rate(KEY) == 1_000_000


def test_a_restarted_relay_never_shows_a_negative_or_a_spike() -> None:
    rates: RelayRates[tuple[str, str]] = RelayRates(WINDOW)
    rates.observe(KEY, sample(1, T0 + 1000, 5_000_000_000))
    rates.observe(KEY, sample(2, T0 + 1005, 5_005_000_000))
    assert rates.rate(KEY) == 1_000_000
    # The new instance's counters start again from 0 (started 1 s before its report).
    restarted = T0 + 1009
    rates.observe(KEY, sample(1, restarted + 1, 300_000, instance="b", started_at=restarted))
    assert rates.rate(KEY) == 300_000
    # An instance first seen long after it started gives no rate from one report.
    rates.observe(KEY, sample(9, T0 + 5000, 10**12, instance="c", started_at=T0 + 1500))
    assert rates.rate(KEY) == 0.0


def test_a_relay_clock_that_steps_back_starts_the_window_over() -> None:
    rates: RelayRates[tuple[str, str]] = RelayRates(WINDOW)
    rates.observe(KEY, sample(1, T0 + 100, 0))
    rates.observe(KEY, sample(2, T0 + 105, 5_000_000))
    rates.observe(KEY, sample(3, T0 + 104, 6_000_000))  # NTP stepped the relay back
    assert rates.rate(KEY) == 0.0
    rates.observe(KEY, sample(4, T0 + 106, 8_000_000))
    assert rates.rate(KEY) == 1_000_000


def test_old_traffic_leaves_the_window() -> None:
    rates: RelayRates[tuple[str, str]] = RelayRates(10.0)
    counter = 0
    for seq in range(1, 5):  # 3 MB/s for 15 s
        rates.observe(KEY, sample(seq, T0 + 100 + 5 * seq, counter))
        counter += 15_000_000
    assert rates.rate(KEY) == 3_000_000
    for seq in range(5, 9):  # then idle: within one window the rate is 0
        counter += 0 if seq > 5 else -15_000_000  # seq 5 repeats the last counter reading
        rates.observe(KEY, sample(seq, T0 + 100 + 5 * seq, counter))
    assert rates.rate(KEY) == 0.0


def test_a_chatty_relay_keeps_a_bounded_window_spanning_its_length() -> None:
    rates: RelayRates[tuple[str, str]] = RelayRates(WINDOW)
    for seq in range(1, 10_001):  # a report every 10 ms at 1 MB/s, for 100 s
        rates.observe(KEY, sample(seq, T0 + 500 + seq / 100, seq * 10_000))
        assert rates.samples(KEY) <= MAX_SAMPLES + 2
    assert rates.rate(KEY) == pytest.approx(1_000_000)
    rates.forget(KEY)
    assert (rates.rate(KEY), rates.samples(KEY), len(rates)) == (0.0, 0, 0)


def test_the_fleet_counts_bandwidth_of_relays_that_count_for_scaling() -> None:
    fleet = FleetState(stale_after=15, expire_after=60, max_relays=10, bandwidth_window=WINDOW)
    fleet.apply(sample(1, T0 + 100, 0), now=0.0)
    fleet.apply(sample(2, T0 + 105, 10_000_000), now=5.0)
    fleet.apply(sample(1, T0 + 100, 0, pod="relay-b"), now=0.0)
    fleet.apply(sample(2, T0 + 105, 5_000_000, pod="relay-b"), now=5.0)
    fleet.apply(sample(1, T0 + 100, 0, pod="relay-c"), now=0.0)
    fleet.apply(sample(2, T0 + 105, 50_000_000, pod="relay-c", draining=True), now=5.0)
    assert fleet.select("stunner-gateway").bandwidth == 3_000_000  # relay-c drains
    assert fleet.rates.rate(("stunner", "relay-c")) == 10_000_000
    # Totals going down within an instance are refused before any rate sees them.
    with pytest.raises(wire.ReportError):
        fleet.apply(sample(3, T0 + 110, 1), now=10.0)
    assert fleet.rates.rate(KEY) == 2_000_000
    # relay-b falls silent and expires: its bytes/s leave with it.
    fleet.apply(sample(3, T0 + 170, 130_000_000), now=65.0)
    fleet.expire(now=66.0)
    assert fleet.select("stunner-gateway").bandwidth == pytest.approx(120_000_000 / 65)
    assert len(fleet.rates) == 1


# ---- properties -------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    reports: list[wire.Report]
    # The highest rate either direction had between two consecutive counter readings
    # (an instance's start, when its counters were 0, is one).
    max_rate: float


@st.composite
def histories(draw: st.DrawFn) -> History:
    """One pod's relay over 1-3 instances (restarts), each reporting growing counters."""
    reports: list[wire.Report] = []
    highest = 0.0
    started = T0
    for index in range(draw(st.integers(1, 3))):
        # Readings (time, received, sent): the counters were 0 when the instance started.
        readings = [(started, 0, 0)]
        at = started + draw(st.floats(0.01, 3 * WINDOW))
        for seq in range(1, draw(st.integers(1, 12)) + 1):
            _, received, sent = readings[-1]
            received += draw(st.integers(0, 10**9))
            sent += draw(st.integers(0, 10**9))
            readings.append((at, received, sent))
            reports.append(
                sample(seq, at, received, sent, instance=f"i{index}", started_at=started)
            )
            at += draw(st.floats(0.01, 20.0))
        for (t0, r0, s0), (t1, r1, s1) in itertools.pairwise(readings):
            highest = max(highest, (r1 - r0) / (t1 - t0), (s1 - s0) / (t1 - t0))
        started = at + draw(st.floats(0.01, 100.0))  # the next instance starts later
    return History(reports, highest)


@settings(max_examples=300, deadline=None)
@given(history=histories(), data=st.data())
def test_no_delivery_order_gives_a_negative_rate_or_one_above_the_true_maximum(
    history: History, data: st.DataObject
) -> None:
    delivered = data.draw(st.lists(st.sampled_from(history.reports), max_size=40))
    order = data.draw(st.permutations([*history.reports, *delivered]))
    # Any report may also be lost.
    kept = [item for item in order if data.draw(st.booleans()) or item is order[-1]]
    rates: RelayRates[tuple[str, str]] = RelayRates(WINDOW)
    newest: tuple[float, int] | None = None
    for item in kept:
        before = rates.rate(KEY)
        rates.observe(KEY, item)
        position = (item.relay.started_at, item.seq)
        if newest is not None and position <= newest:
            # A repeat, a late seq or an older instance: superseded, changes nothing.
            assert rates.rate(KEY) == before
        newest = position if newest is None else max(newest, position)
        assert 0.0 <= rates.rate(KEY) <= history.max_rate * (1 + 1e-9) + 1e-9
        assert rates.samples(KEY) <= MAX_SAMPLES + 2


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1_000, 10**9),
    before=st.lists(st.tuples(st.floats(0.05, 5.0), st.integers(0, 10**9)), max_size=20),
    steps=st.lists(st.floats(0.05, 5.0), min_size=1, max_size=200),
    restart=st.booleans(),
    window=st.floats(1.0, 60.0),
)
def test_in_order_reports_converge_to_the_true_rate(
    rate: int,
    before: list[tuple[float, int]],
    steps: list[float],
    restart: bool,
    window: float,
) -> None:
    """Whatever came before, once a relay has carried ``rate`` bytes/s for a whole window
    (or since it restarted, within one), the rate is exactly ``rate``."""
    rates: RelayRates[tuple[str, str]] = RelayRates(window)
    at, counter, seq = T0 + 10_000, 0, 0
    for gap, grown in before:  # any traffic at all
        seq, at, counter = seq + 1, at + gap, counter + grown
        rates.observe(KEY, sample(seq, at, counter))
    started, instance = T0, "inst1"
    if restart:  # a new instance, whose counters start at 0
        started, instance, seq, counter = at + 1.0, "inst2", 0, 0
        at = started
    # From here on, exactly ``rate`` bytes per second (the counters as the relay reads them).
    base_at, base_counter = at, counter
    covered = 0.0
    for gap in steps:
        at += gap
        covered += gap
        seq += 1
        reading = base_counter + round(rate * (at - base_at))
        rates.observe(KEY, sample(seq, at, reading, instance=instance, started_at=started))
    spans = covered >= window + 5.0 or (restart and covered < window - 0.01)
    if spans:
        # Readings are whole bytes: off by at most one byte at either end.
        assert rates.rate(KEY) == pytest.approx(rate, abs=2 / min(covered, window))
    assert rates.rate(KEY) >= 0.0
