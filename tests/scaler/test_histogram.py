"""The one histogram both exported histograms count in: buckets, cumulative samples, ``le``."""

from __future__ import annotations

import math

from scaler.histogram import Histogram, le


def test_an_observation_counts_in_the_first_bucket_it_fits() -> None:
    histogram = Histogram((1.0, 5.0, 10.0))
    for value in (0.0, 1.0, 1.5, 5.0, 7.0, 11.0):
        histogram.observe(value)
    assert histogram.buckets == [2, 2, 1]  # 11.0 fits no bound: only in the count
    assert (histogram.count, histogram.total) == (6, 25.5)
    assert histogram.cumulative() == [2, 4, 5]


def test_samples_are_cumulative_with_the_bounds_as_client_libraries_write_them() -> None:
    histogram = Histogram((0.0001, 0.00025, 1.0, 60.0))
    histogram.observe(0.0002)
    histogram.observe(30.0)
    histogram.observe(1e9)
    assert histogram.samples() == [
        ("0.0001", 0),
        ("0.00025", 1),
        ("1.0", 1),
        ("60.0", 2),
        ("+Inf", 3),
    ]


def test_an_empty_histogram_exports_zeros() -> None:
    assert Histogram((1.0,)).samples() == [("1.0", 0), ("+Inf", 0)]


def test_le() -> None:
    assert [le(1.0), le(0.001), le(86400.0), le(math.inf)] == ["1.0", "0.001", "86400.0", "+Inf"]
