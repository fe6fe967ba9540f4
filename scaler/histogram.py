"""One histogram for the scaler's exports: counts per bucket, rendered with ``le`` bounds.

Both histograms the scaler exports (allocation durations, kept in :mod:`scaler.fleet`, and
gRPC latencies, :mod:`scaler.keda.stats`) count here: an observation goes into the first
bucket whose upper bound it does not exceed (none: only the ``+Inf`` count), and the
cumulative counts Prometheus wants are summed when the histogram is rendered.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from prometheus_client.utils import floatToGoString

INF_BOUND = "+Inf"


class Histogram:
    """Observations counted per bucket of the upper ``bounds`` (ascending)."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        # buckets[i]: observations above bounds[i - 1] and at most bounds[i].
        self.buckets = [0] * len(self.bounds)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.buckets[index] += 1
                break
        self.count += 1
        self.total += value

    def cumulative(self) -> list[int]:
        """Observations at most each bound, as a Prometheus ``_bucket`` series counts them."""
        out, running = [], 0
        for count in self.buckets:
            running += count
            out.append(running)
        return out

    def samples(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` for every bound and ``+Inf``, for a histogram family."""
        counts = [*self.cumulative(), self.count]
        return list(zip(_labels(self.bounds), counts, strict=True))


def le(bound: float) -> str:
    """A bucket bound as client libraries write it (``0.001``, ``1.0``, ``+Inf``)."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


@cache
def _labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return (*(le(bound) for bound in bounds), INF_BOUND)
