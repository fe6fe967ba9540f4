"""Prometheus exposition: the fleet rendered at scrape time by a custom collector.

Metric names and labels are a contract (DESIGN.md, "Exported metrics"). Nothing
is mutated per report; ``collect()`` builds fresh metric families from state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from scaler.fleet import DURATION_BUCKETS, FleetState
from scaler.ingest import RESULTS, IngestStats
from scaler.scaling import ScalingPolicy
from scaler.wire import SIDES, Transport

RELAY_LABELS = ["namespace", "gateway", "pod"]
# Transports every relay exports even at zero, so series do not flap in and out.
BASE_TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp")
SIDE_HELP = ": side=client on its TURN listeners, side=peer on its relayed sockets"


class FleetCollector(Collector):
    def __init__(
        self,
        fleet: FleetState,
        stats: IngestStats,
        policy: ScalingPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        self.stats = stats
        self.policy = policy
        self.clock = clock
        # Other parts of the scaler (gRPC, Kubernetes) add their own families here.
        self.extra: list[Callable[[], Iterator[Metric]]] = []

    def collect(self) -> Iterator[Metric]:
        yield from self._relays()
        yield from self._durations()
        yield from self._scaling()
        yield from self._own()
        for extra in self.extra:
            yield from extra()

    def _relays(self) -> Iterator[Metric]:
        now = self.clock()
        transport_labels = [*RELAY_LABELS, "transport"]
        allocations = GaugeMetricFamily(
            "stunner_allocations_active",
            "TURN allocations currently active on the relay",
            labels=transport_labels,
        )
        connections = CounterMetricFamily(
            "stunner_connections",
            "Client connections (TCP) and 5-tuples (UDP) accepted by the relay's listeners",
            labels=transport_labels,
        )
        received = CounterMetricFamily(
            "stunner_bytes_received",
            "Bytes received by the relay" + SIDE_HELP,
            labels=[*RELAY_LABELS, "side"],
        )
        sent = CounterMetricFamily(
            "stunner_bytes_sent",
            "Bytes sent by the relay" + SIDE_HELP,
            labels=[*RELAY_LABELS, "side"],
        )
        created = CounterMetricFamily(
            "stunner_allocations_created",
            "TURN allocations created",
            labels=transport_labels,
        )
        deleted = CounterMetricFamily(
            "stunner_allocations_deleted",
            "TURN allocations deleted, by reason (refresh_zero, expired, drained, error)",
            labels=[*transport_labels, "reason"],
        )
        up = GaugeMetricFamily(
            "stunner_relay_up",
            "1 while the relay reports within --stale-after, else 0",
            labels=RELAY_LABELS,
        )
        draining = GaugeMetricFamily(
            "stunner_relay_draining",
            "1 while the relay drains (not counted for scaling)",
            labels=RELAY_LABELS,
        )
        age = GaugeMetricFamily(
            "stunner_relay_report_age_seconds",
            "Seconds since the relay's last accepted report",
            labels=RELAY_LABELS,
        )
        for relay in self.fleet.relays():
            identity = relay.identity
            labels = [identity.namespace, identity.gateway, identity.pod]
            totals = relay.totals()
            for transport in {*BASE_TRANSPORTS, *relay.state.allocations, *totals.connections}:
                labelled = [*labels, transport]
                allocations.add_metric(labelled, relay.state.allocations.get(transport, 0))
                connections.add_metric(labelled, totals.connections.get(transport, 0))
                created.add_metric(labelled, relay.created.get(transport, 0))
            for side in SIDES:
                received.add_metric([*labels, side], totals.bytes_received.get(side, 0))
                sent.add_metric([*labels, side], totals.bytes_sent.get(side, 0))
            for (transport, reason), count in relay.deleted.items():
                deleted.add_metric([*labels, transport, reason], count)
            up.add_metric(labels, 1 if self.fleet.is_up(relay, now) else 0)
            draining.add_metric(labels, 1 if relay.draining else 0)
            age.add_metric(labels, max(now - relay.last_seen, 0.0))
        yield from (allocations, connections, received, sent, created, deleted)
        yield from (up, draining, age)

    def _durations(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "stunner_allocation_duration_seconds",
            "Lifetime of ended TURN allocations",
            labels=["namespace", "gateway", "transport"],
        )
        bounds = [*(_le(bound) for bound in DURATION_BUCKETS), "+Inf"]
        for (namespace, gateway, transport), histogram in self.fleet.durations():
            counts = [*histogram.buckets, histogram.count]
            family.add_metric(
                [namespace, gateway, transport],
                list(zip(bounds, counts, strict=True)),
                histogram.total,
            )
        yield family

    def _scaling(self) -> Iterator[Metric]:
        allocations = GaugeMetricFamily(
            "stunner_scaler_allocations",
            "Allocations that count for scaling (relays not draining, not expired)",
            labels=["namespace", "gateway"],
        )
        desired = GaugeMetricFamily(
            "stunner_scaler_desired_replicas",
            "Relay replicas the scaling rule asks for (clamped to the min and max replicas)",
            labels=["namespace", "gateway"],
        )
        for namespace, gateway in sorted(self.fleet.gateways()):
            selection = self.fleet.select(gateway, namespace)
            allocations.add_metric([namespace, gateway], selection.allocations)
            desired.add_metric(
                [namespace, gateway], self.policy.desired_replicas(selection.allocations)
            )
        yield allocations
        yield desired

    def _own(self) -> Iterator[Metric]:
        reports = CounterMetricFamily(
            "turnscale_reports",
            "Relay reports received, by result",
            labels=["result"],
        )
        for result in RESULTS:
            reports.add_metric([result], self.stats.reports.get(result, 0))
        yield reports
        yield CounterMetricFamily(
            "turnscale_report_events",
            "Allocation events taken from accepted reports",
            value=self.stats.events,
        )
        yield GaugeMetricFamily(
            "turnscale_relays_tracked",
            "Relays the scaler currently tracks (bounded by --max-relays)",
            value=len(self.fleet),
        )


def _le(bound: float) -> str:
    """Bucket bound as client libraries write it (``1.0``, ``+Inf``)."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def make_registry(collector: FleetCollector) -> CollectorRegistry:
    """A private registry (no process-global state) holding the fleet collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Exposition bytes and content type: OpenMetrics when ``accept`` asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
