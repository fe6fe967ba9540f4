"""The scaling rule (README, "Scaling rule").

desired = clamp(ceil(allocations / target), min, max)

With a bandwidth target (``--target-bandwidth-per-replica``, off by default) the rule
proposes replicas for the relayed bytes per second as well (:mod:`scaler.rates`), and the
larger proposal decides, as KEDA's HPA does with one metric per proposal::

    desired = clamp(max(ceil(allocations / target), ceil(bandwidth / bandwidth target)),
                    min, max)

:class:`GatewayPolicies` is which policy each gateway's fleet follows: the flags, or what
its KEDA trigger asks for (:class:`scaler.keda.policies.PolicyBook`). The exported desired
replicas and the deletion-cost planner read the same one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, Protocol

ALLOCATIONS: Final = "allocations"
BANDWIDTH: Final = "bandwidth"
Metric = Literal["allocations", "bandwidth"]
#: The largest bandwidth figure answered (bytes/s): exact in a float64, far inside KEDA's
#: int64 fields, whatever counters a relay reports over however short a time.
MAX_METRIC_VALUE: Final = 1 << 53
METRICS: Final[tuple[Metric, ...]] = (ALLOCATIONS, BANDWIDTH)


@dataclass(frozen=True, slots=True)
class Decision:
    """What each metric proposes (before the bounds), which decides, and the outcome."""

    allocations: int
    bandwidth: int | None  # None: no bandwidth target
    deciding: Metric
    desired_replicas: int


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    min_replicas: int = 2
    max_replicas: int = 10
    target_per_replica: int = 100
    # Relayed bytes per second one replica should carry; None: allocations alone decide.
    target_bandwidth_per_replica: int | None = None

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError("minReplicas must not be negative")
        if self.max_replicas < max(self.min_replicas, 1):
            raise ValueError("maxReplicas must be at least minReplicas and at least 1")
        if self.target_per_replica < 1:
            raise ValueError("targetPerReplica must be at least 1")
        if self.target_bandwidth_per_replica is not None and self.target_bandwidth_per_replica < 1:
            raise ValueError("targetBandwidthPerReplica must be at least 1 byte per second")

    def desired_replicas(self, allocations: int, bandwidth: float = 0.0) -> int:
        """Replicas for ``allocations`` (and ``bandwidth`` relayed bytes/s, with a bandwidth
        target), as KEDA's HPA computes it from the same targets."""
        return self.decide(allocations, bandwidth).desired_replicas

    def decide(self, allocations: int, bandwidth: float = 0.0) -> Decision:
        by_allocations = -(-allocations // self.target_per_replica)  # ceil without floats
        by_bandwidth = None
        deciding: Metric = ALLOCATIONS
        wanted = by_allocations
        if self.target_bandwidth_per_replica is not None:
            # The HPA gets whole bytes/s (metric_value); ceil(ceil(x) / t) == ceil(x / t).
            by_bandwidth = -(-metric_value(bandwidth) // self.target_bandwidth_per_replica)
            if by_bandwidth > by_allocations:
                deciding, wanted = BANDWIDTH, by_bandwidth
        desired = min(max(wanted, self.min_replicas), self.max_replicas)
        return Decision(by_allocations, by_bandwidth, deciding, desired)


def metric_value(bandwidth: float) -> int:
    """Relayed bytes per second as the whole number KEDA and ``/v1/scale`` carry (rounded
    up, so a fleet just over a target is never shown under it)."""
    return min(max(math.ceil(bandwidth), 0), MAX_METRIC_VALUE)


class GatewayPolicies(Protocol):
    """The policy one gateway's relay fleet follows now."""

    def policy_for(self, namespace: str, gateway: str) -> ScalingPolicy: ...
