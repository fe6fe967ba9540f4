"""The one backoff rule: exponential, equal jitter, capped, bounded after long outages."""

from __future__ import annotations

import pytest

from scaler.common.backoff import Backoff, delay


def test_delays_double_up_to_the_maximum_with_half_of_each_random() -> None:
    highest = Backoff(1.0, 8.0, rng=lambda: 1.0)
    assert [highest.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    lowest = Backoff(1.0, 8.0, rng=lambda: 0.0)
    assert [lowest.next() for _ in range(3)] == [0.5, 1.0, 2.0]


def test_reset_starts_again_from_the_first_delay() -> None:
    backoff = Backoff(0.5, 30.0, rng=lambda: 1.0)
    backoff.next()
    backoff.next()
    backoff.reset()
    assert backoff.next() == 0.5


def test_a_very_long_outage_stays_at_the_maximum() -> None:
    assert delay(10**6, initial=0.1, maximum=5.0, rng=lambda: 1.0) == 5.0
    assert delay(0, initial=0.1, maximum=5.0, rng=lambda: 1.0) == pytest.approx(0.1)
