"""The scaling rule (README, "Scaling rule").

desired = clamp(ceil(allocations / target), min, max)

:class:`GatewayPolicies` is which policy each gateway's fleet follows: the flags, or what
its KEDA trigger asks for (:class:`scaler.keda.policies.PolicyBook`). The exported desired
replicas and the deletion-cost planner read the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    min_replicas: int = 2
    max_replicas: int = 10
    target_per_replica: int = 100

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError("minReplicas must not be negative")
        if self.max_replicas < max(self.min_replicas, 1):
            raise ValueError("maxReplicas must be at least minReplicas and at least 1")
        if self.target_per_replica < 1:
            raise ValueError("targetPerReplica must be at least 1")

    def desired_replicas(self, allocations: int) -> int:
        """Replicas for ``allocations``, as KEDA's HPA computes it from the same target."""
        wanted = -(-allocations // self.target_per_replica)  # ceil without floats
        return min(max(wanted, self.min_replicas), self.max_replicas)


class GatewayPolicies(Protocol):
    """The policy one gateway's relay fleet follows now."""

    def policy_for(self, namespace: str, gateway: str) -> ScalingPolicy: ...
