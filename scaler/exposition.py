"""Prometheus exposition: the fleet rendered at scrape time by a custom collector.

Metric names and labels are a contract (README, "Metrics reference"). Nothing
is mutated per report; ``collect()`` builds fresh metric families from state.
:func:`make_registry` is the scaler's private registry: the fleet collector, the gRPC
and Kubernetes statistics (their own collectors), then the process's own metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from scaler.exporter import ALONE, Exporter
from scaler.families import RenderedFamily, encode
from scaler.fleet import FleetState
from scaler.ingest import RESULTS, IngestStats
from scaler.scaling import METRICS, GatewayPolicies
from scaler.wire import SIDES, Transport

RELAY_LABELS = ["namespace", "gateway", "pod"]
# Transports every relay exports even at zero, so series do not flap in and out.
BASE_TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp")
SIDE_HELP = ": side=client on its TURN listeners, side=peer on its relayed sockets"


class FleetCollector(Collector):
    """The relays, allocation durations, scaling inputs and ingest counters.

    A gateway's exported desired replicas follow ``policies``: what its KEDA trigger
    asks for, else the flags. The ``stunner_*`` families are exported only while
    ``exporter`` leads (:mod:`scaler.exporter`); the ``turnscale_*`` ones always.
    """

    def __init__(
        self,
        fleet: FleetState,
        stats: IngestStats,
        policies: GatewayPolicies,
        clock: Callable[[], float] = time.monotonic,
        exporter: Exporter = ALONE,
    ) -> None:
        self.fleet = fleet
        self.stats = stats
        self.policies = policies
        self.clock = clock
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        # Read once: a scrape shows the fleet whole or not at all.
        leading = self.exporter.leading
        if leading:
            yield from self._relays()
            yield from self._durations()
            yield from self._scaling()
        yield from self._own(leading)

    def _relays(self) -> Iterator[Metric]:
        now = self.clock()
        transport_labels = [*RELAY_LABELS, "transport"]
        side_labels = [*RELAY_LABELS, "side"]
        allocations = RenderedFamily(
            "stunner_allocations_active",
            "TURN allocations currently active on the relay",
            "gauge",
            transport_labels,
        )
        connections = RenderedFamily(
            "stunner_connections",
            "Client connections (TCP) and 5-tuples (UDP) accepted by the relay's listeners",
            "counter",
            transport_labels,
        )
        received = RenderedFamily(
            "stunner_bytes_received",
            "Bytes received by the relay" + SIDE_HELP,
            "counter",
            side_labels,
        )
        sent = RenderedFamily(
            "stunner_bytes_sent", "Bytes sent by the relay" + SIDE_HELP, "counter", side_labels
        )
        created = RenderedFamily(
            "stunner_allocations_created", "TURN allocations created", "counter", transport_labels
        )
        deleted = RenderedFamily(
            "stunner_allocations_deleted",
            "TURN allocations deleted, by reason (refresh_zero, expired, drained, error)",
            "counter",
            [*transport_labels, "reason"],
        )
        up = RenderedFamily(
            "stunner_relay_up",
            "1 while the relay reports within --stale-after, else 0",
            "gauge",
            RELAY_LABELS,
        )
        draining = RenderedFamily(
            "stunner_relay_draining",
            "1 while the relay drains (not counted for scaling)",
            "gauge",
            RELAY_LABELS,
        )
        age = RenderedFamily(
            "stunner_relay_report_age_seconds",
            "Seconds since the relay's last accepted report",
            "gauge",
            RELAY_LABELS,
        )
        bandwidth = RenderedFamily(
            "stunner_relay_bandwidth_bytes_per_second",
            "Relayed bytes per second over --bandwidth-window: the busier direction "
            "(received or sent, client and peer sides summed)",
            "gauge",
            RELAY_LABELS,
        )
        rates = self.fleet.rates
        stale_after = self.fleet.stale_after
        for relay in self.fleet.relays():
            identity = relay.identity
            labels = (identity.namespace, identity.gateway, identity.pod)
            totals = relay.totals()
            state_allocations = relay.state.allocations
            for transport in {
                *BASE_TRANSPORTS,
                *state_allocations,
                *totals.connections,
                *relay.created,
            }:
                labelled = (*labels, transport)
                allocations.add(labelled, state_allocations.get(transport, 0))
                connections.add(labelled, totals.connections.get(transport, 0))
                created.add(labelled, relay.created.get(transport, 0))
            for side in SIDES:
                received.add((*labels, side), totals.bytes_received.get(side, 0))
                sent.add((*labels, side), totals.bytes_sent.get(side, 0))
            for (transport, reason), count in relay.deleted.items():
                deleted.add((*labels, transport, reason), count)
            silence = max(now - relay.last_seen, 0.0)
            up.add(labels, 1 if silence <= stale_after else 0)
            draining.add(labels, 1 if relay.draining else 0)
            age.add(labels, round(silence, 3))
            bandwidth.add(labels, round(rates.rate((identity.namespace, identity.pod)), 3))
        yield from (allocations, connections, received, sent, created, deleted)
        yield from (up, draining, age, bandwidth)

    def _durations(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "stunner_allocation_duration_seconds",
            "Lifetime of ended TURN allocations",
            labels=["namespace", "gateway", "transport"],
        )
        for (namespace, gateway, transport), histogram in self.fleet.durations():
            family.add_metric([namespace, gateway, transport], histogram.samples(), histogram.total)
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
        # The bounds the desired replicas follow (a mutual-TLS trigger's, else the flags), so
        # dashboards and alerts compare against each gateway's own, not the defaults.
        bounds = [
            GaugeMetricFamily(
                f"stunner_scaler_{name}",
                f"{what} the scaler's rule uses for the gateway",
                labels=["namespace", "gateway"],
            )
            for name, what in (
                ("min_replicas", "Fewest relay replicas"),
                ("max_replicas", "Most relay replicas"),
                ("target_per_replica", "Allocations per relay replica"),
            )
        ]
        bandwidth = GaugeMetricFamily(
            "stunner_scaler_bandwidth_bytes_per_second",
            "Relayed bytes per second that count for scaling (relays not draining, not expired)",
            labels=["namespace", "gateway"],
        )
        # Only for gateways with a bandwidth target: without one, allocations alone decide.
        bandwidth_target = GaugeMetricFamily(
            "stunner_scaler_target_bandwidth_per_replica",
            "Relayed bytes per second per relay replica the scaler's rule uses for the gateway",
            labels=["namespace", "gateway"],
        )
        deciding = GaugeMetricFamily(
            "stunner_scaler_deciding",
            "1 for the metric whose proposal sets the desired replicas (the larger; "
            "allocations on a tie), 0 for the other",
            labels=["namespace", "gateway", "metric"],
        )
        for namespace, gateway in sorted(self.fleet.gateways()):
            selection = self.fleet.select(gateway, namespace)
            labels = [namespace, gateway]
            allocations.add_metric(labels, selection.allocations)
            bandwidth.add_metric(labels, round(selection.bandwidth, 3))
            policy = self.policies.policy_for(namespace, gateway)
            decision = policy.decide(selection.allocations, selection.bandwidth)
            desired.add_metric(labels, decision.desired_replicas)
            values = (policy.min_replicas, policy.max_replicas, policy.target_per_replica)
            for family, number in zip(bounds, values, strict=True):
                family.add_metric(labels, number)
            if policy.target_bandwidth_per_replica is not None:
                bandwidth_target.add_metric(labels, policy.target_bandwidth_per_replica)
                for metric in METRICS:
                    deciding.add_metric([*labels, metric], 1 if metric == decision.deciding else 0)
        yield allocations
        yield desired
        yield from bounds
        yield from (bandwidth, bandwidth_target, deciding)

    def _own(self, leading: bool) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "turnscale_scaler_leader",
            "1 while this scaler replica exports the fleet (holds the Lease, or runs alone)",
            value=1 if leading else 0,
        )
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


def make_registry(*collectors: Collector) -> CollectorRegistry:
    """A private registry (no process-global state): ``collectors`` in order, then the
    scaler process's own CPU, memory and file descriptors (``process_*``)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Exposition bytes and content type: OpenMetrics when ``accept`` asks for it."""
    return encode(registry.collect(), accept)
