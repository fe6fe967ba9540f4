"""Bandwidth figures as the flag and the trigger key take them (scaler/common/units.py)."""

from __future__ import annotations

import pytest

from scaler.common.units import MAX_BYTES_PER_SECOND, format_bandwidth, parse_bandwidth


@pytest.mark.parametrize(
    ("text", "bytes_per_second"),
    [
        ("200Mbit", 25_000_000),
        ("1Gbit", 125_000_000),
        ("1gbit", 125_000_000),  # the prefix letter is case-insensitive
        ("1.5Gbit", 187_500_000),  # exact, not a float's neighbour
        ("10Gbit/s", 1_250_000_000),
        ("100Mbitps", 12_500_000),
        ("64kbit", 8_000),
        ("8bit", 1),
        ("25MB", 25_000_000),
        ("25 MB", 25_000_000),
        ("1kB", 1_000),
        ("1KB", 1_000),
        ("1KiB", 1_024),
        ("2MiB/s", 2 * 1024 * 1024),
        ("1GiB", 1 << 30),
        ("1TB", 10**12),
        ("1B", 1),
        ("12bit", 2),  # 1.5 bytes: rounded up, a target never below what was written
        (" 3MB ", 3_000_000),
    ],
)
def test_units_are_read_as_written(text: str, bytes_per_second: int) -> None:
    assert parse_bandwidth(text) == bytes_per_second


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("200", "has no unit"),
        ("200M", "has no unit"),
        ("200Mb", "bits or bytes"),
        ("200mb", "bits or bytes"),
        ("1Kibit", "bytes only"),
        ("0Mbit", "less than 1 byte"),
        ("1bit", "less than 1 byte"),
        ("0.0B", "less than 1 byte"),
        ("81Tbit", "more than 80 Tbit/s"),
        ("-1Mbit", "is not a bandwidth"),
        ("1e9B", "is not a bandwidth"),
        ("fast", "is not a bandwidth"),
        ("1 Gbit 2", "is not a bandwidth"),
        ("", "is not a bandwidth"),
        ("1PB", "is not a bandwidth"),
        ("nanB", "is not a bandwidth"),
        ("1,5Gbit", "is not a bandwidth"),
        ("1Gbit/h", "is not a bandwidth"),
    ],
)
def test_bad_figures_get_a_clear_error(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        parse_bandwidth(text)
    assert repr(text) in str(refused.value)


def test_the_largest_figure_is_still_an_int64() -> None:
    assert parse_bandwidth("80Tbit") == MAX_BYTES_PER_SECOND < 2**63


@pytest.mark.parametrize(
    ("bytes_per_second", "shown"),
    [(125_000_000, "1Gbit/s"), (25_000_000, "200Mbit/s"), (1_000, "8kbit/s"), (10, "80bit/s")],
)
def test_figures_are_shown_in_bits_as_nics_are_sold(bytes_per_second: int, shown: str) -> None:
    assert format_bandwidth(bytes_per_second) == shown
