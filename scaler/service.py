"""The scaler's state and the operations its HTTP and gRPC front ends share."""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from scaler.changes import ChangeFeed
from scaler.config import ScalerConfig
from scaler.exposition import FleetCollector, make_registry
from scaler.fleet import FleetState, RelayKey
from scaler.ingest import Answer, ReportIngest
from scaler.scaling import ScalingPolicy


@dataclass(frozen=True, slots=True)
class ScaleAnswer:
    """One fleet's scaling inputs and decision (metrics-api JSON and gRPC answers)."""

    gateway: str | None
    namespace: str | None
    allocations: int
    relays: int
    policy: ScalingPolicy

    @property
    def desired_replicas(self) -> int:
        return self.policy.desired_replicas(self.allocations)

    def as_json(self) -> dict[str, object]:
        return {
            "gateway": self.gateway,
            "namespace": self.namespace,
            "allocations": self.allocations,
            "desiredReplicas": self.desired_replicas,
            "minReplicas": self.policy.min_replicas,
            "maxReplicas": self.policy.max_replicas,
            "targetPerReplica": self.policy.target_per_replica,
            "relays": self.relays,
            "active": self.allocations > 0,
        }


class ScalerService:
    """Composition root: fleet state, ingest, metrics and change notification."""

    def __init__(self, config: ScalerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.fleet = FleetState(
            stale_after=config.stale_after,
            expire_after=config.expire_after,
            max_relays=config.max_relays,
        )
        self.ingest = ReportIngest(self.fleet, config.token)
        self.collector = FleetCollector(self.fleet, self.ingest.stats, config.policy, clock)
        self.registry: CollectorRegistry = make_registry(self.collector)
        self.changes = ChangeFeed()
        # Named readiness checks; /readyz is 200 only while all of them are true,
        # except the advisory ones: shown in /readyz, never making the scaler unready.
        self.readiness: dict[str, bool] = {"http": False}
        self.advisory: set[str] = set()
        # Relays that must not expire however long they are silent (their pod exists);
        # the Kubernetes integration replaces this, else --expire-after applies to all.
        self.spared: Callable[[], Container[RelayKey]] = _nothing_spared

    def submit_report(
        self, *, content_type: str, authorization: str | None, body: bytes | None, peer: str | None
    ) -> Answer:
        before = self.fleet.generation
        answer = self.ingest.handle(
            content_type=content_type,
            authorization=authorization,
            body=body,
            now=self.clock(),
            peer=peer,
        )
        if self.fleet.generation != before:
            self.changes.notify()
        return answer

    def sweep(self) -> None:
        """Expire silent relays; run about once a second."""
        if self.fleet.expire(self.clock(), self.spared()):
            self.changes.notify()

    def remove_relay(self, namespace: str, pod: str) -> bool:
        """Drop a relay at once (its pod was deleted); wakes push-style answers."""
        removed = self.fleet.remove(namespace, pod)
        if removed:
            self.changes.notify()
        return removed

    def scale(
        self,
        gateway: str | None = None,
        namespace: str | None = None,
        policy: ScalingPolicy | None = None,
    ) -> ScaleAnswer:
        selection = self.fleet.select(gateway, namespace)
        return ScaleAnswer(
            gateway,
            namespace,
            selection.allocations,
            selection.relays,
            policy or self.config.policy,
        )

    @property
    def ready(self) -> bool:
        return all(ok for name, ok in self.readiness.items() if name not in self.advisory)


def _nothing_spared() -> Container[RelayKey]:
    return ()
