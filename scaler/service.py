"""The scaler's state and the operations its front ends share.

:class:`ScalerService` holds the fleet state, report ingest, the flags' scaling policy and
the change feed; the HTTP and gRPC front ends, the Kubernetes integration and the sweeper
call it. :class:`scaler.server.ScalerServer` builds it first and everything else around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from dataclasses import dataclass

from scaler.changes import ChangeFeed
from scaler.fleet import FleetState, RelayKey
from scaler.ingest import Answer, ReportIngest
from scaler.scaling import Decision, ScalingPolicy, metric_value


@dataclass(frozen=True, slots=True)
class ScaleAnswer:
    """One fleet's scaling inputs and decision (metrics-api JSON and gRPC answers)."""

    gateway: str | None
    namespace: str | None
    allocations: int
    relays: int
    policy: ScalingPolicy
    bandwidth: float = 0.0  # relayed bytes per second (scaler.rates)

    @property
    def decision(self) -> Decision:
        return self.policy.decide(self.allocations, self.bandwidth)

    @property
    def desired_replicas(self) -> int:
        return self.decision.desired_replicas

    def as_json(self) -> dict[str, object]:
        answer: dict[str, object] = {
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
        if self.policy.target_bandwidth_per_replica is not None:
            # Only with a bandwidth target: otherwise the answer stays what it always was.
            decision = self.decision
            answer["bandwidth"] = metric_value(self.bandwidth)
            answer["targetBandwidthPerReplica"] = self.policy.target_bandwidth_per_replica
            answer["proposals"] = {
                "allocations": decision.allocations,
                "bandwidth": decision.bandwidth,
            }
            answer["decidedBy"] = decision.deciding
        return answer


class ScalerService:
    """Fleet state, ingest and change notification; answers from memory only."""

    def __init__(
        self,
        fleet: FleetState,
        ingest: ReportIngest,
        policy: ScalingPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ingest`` applies reports to ``fleet``; ``policy`` is the flags' (``/v1/scale``,
        and what KEDA triggers leave out)."""
        if ingest.fleet is not fleet:
            raise ValueError("ingest must apply reports to the service's fleet")
        self.fleet = fleet
        self.ingest = ingest
        self.policy = policy
        self.clock = clock
        self.changes = ChangeFeed()

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

    def sweep(self, spared: Container[RelayKey] = ()) -> None:
        """Expire silent relays but ``spared`` ones (their pod exists); wakes push answers.

        :class:`scaler.sweeper.Sweeper` calls it about once a second.
        """
        if self.fleet.expire(self.clock(), spared):
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
            policy or self.policy,
            selection.bandwidth,
        )
