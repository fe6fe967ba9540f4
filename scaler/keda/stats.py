"""The gRPC front end's own counters: a collector of the scaler's registry, rendered at
scrape time (no per-call metric objects).

- ``turnscale_grpc_requests_total{method,code}``: finished RPCs by status code
  (a stream counts once, when it ends).
- ``turnscale_grpc_request_duration_seconds{method}``: how long unary RPCs took to
  answer (streams live as long as their caller wants, so they are not observed).
- ``turnscale_grpc_streams_active{method}``: server streams open now.

``method`` is ``package.Service/Method``; calls to methods the server does not
have are counted under ``method="unknown"``, so callers cannot add series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from scaler.histogram import Histogram

UNKNOWN_METHOD: Final = "unknown"
# Upper bounds in seconds: answers come from memory, so most land far below 1 ms.
DURATION_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


def method_label(full_method: str) -> str:
    """The label of a gRPC method path: ``/pkg.Service/Method`` -> ``pkg.Service/Method``."""
    return full_method.lstrip("/")


class GrpcStats(Collector):
    def __init__(self, unary: Iterable[str] = (), streams: Iterable[str] = ()) -> None:
        """``unary`` and ``streams`` are the served methods, exported from the start at zero."""
        self.requests: Counter[tuple[str, str]] = Counter()
        self.durations: dict[str, Histogram] = {}
        self.streams: Counter[str] = Counter()
        for method in unary:
            self.requests[(method, "OK")] += 0
            self.durations[method] = Histogram(DURATION_BUCKETS)
        for method in streams:
            self.requests[(method, "OK")] += 0
            self.streams[method] += 0

    def finished(self, method: str, code: str, seconds: float | None = None) -> None:
        """One RPC ended with ``code``; ``seconds`` is its latency (unary calls only)."""
        self.requests[(method, code)] += 1
        if seconds is not None:
            histogram = self.durations.get(method)
            if histogram is None:
                histogram = self.durations[method] = Histogram(DURATION_BUCKETS)
            histogram.observe(seconds)

    def stream_opened(self, method: str) -> None:
        self.streams[method] += 1

    def stream_closed(self, method: str) -> None:
        self.streams[method] -= 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "turnscale_grpc_requests",
            "gRPC calls finished, by method and status code (streams count when they end)",
            labels=["method", "code"],
        )
        for (method, code), count in sorted(self.requests.items()):
            requests.add_metric([method, code], count)
        yield requests
        durations = HistogramMetricFamily(
            "turnscale_grpc_request_duration_seconds",
            "Time to answer unary gRPC calls, by method",
            labels=["method"],
        )
        for method, histogram in sorted(self.durations.items()):
            durations.add_metric([method], histogram.samples(), histogram.total)
        yield durations
        streams = GaugeMetricFamily(
            "turnscale_grpc_streams_active",
            "Server-streaming gRPC calls open now (KEDA StreamIsActive, health Watch)",
            labels=["method"],
        )
        for method, count in sorted(self.streams.items()):
            streams.add_metric([method], count)
        yield streams
