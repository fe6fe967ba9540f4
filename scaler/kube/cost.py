"""Scale-in by deletion cost: which relay pods get which ``pod-deletion-cost``. Pure.

When a relay fleet (one gateway) wants fewer replicas than it has ready relays, the
ReplicaSet is about to remove some of them. It removes pods with the lowest
``controller.kubernetes.io/pod-deletion-cost`` first, so the planner sets each relay
pod's cost to its active allocations: the emptiest relays go first and the fewest
calls are cut (or drained).

The planner is called on a timer, never per report. It asks only for values that
differ from what the pod carries now, patches one pod at most once per
``min_interval`` and at most ``max_patches`` pods per round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from scaler.fleet import FleetState, GatewayKey, Relay, RelayKey
from scaler.kube.pods import INT32_MAX, INT32_MIN, PodInfo
from scaler.scaling import ScalingPolicy

MAX_PATCHES_PER_ROUND: Final = 100


def clamp_int32(value: int) -> int:
    return max(INT32_MIN, min(INT32_MAX, value))


@dataclass(frozen=True, slots=True)
class CostPatch:
    namespace: str
    pod: str
    cost: int
    previous: int | None  # the pod's annotation before, None when it had none


@dataclass(frozen=True, slots=True)
class FleetScaleIn:
    """One gateway's view: replicas wanted against relays ready now."""

    namespace: str
    gateway: str
    desired: int
    ready: int

    @property
    def scaling_in(self) -> bool:
        return self.desired < self.ready


@dataclass(frozen=True, slots=True)
class CostPlan:
    patches: list[CostPatch]
    fleets: list[FleetScaleIn]
    deferred: int  # pods whose cost is out of date but were patched too recently or over budget


class CostPlanner:
    def __init__(self, *, min_interval: float, max_patches: int = MAX_PATCHES_PER_ROUND) -> None:
        if min_interval < 0 or max_patches < 1:
            raise ValueError("need min_interval >= 0 and max_patches >= 1")
        self.min_interval = min_interval
        self.max_patches = max_patches
        self._last_patch: dict[RelayKey, float] = {}

    def plan(
        self,
        fleet: FleetState,
        pods: Mapping[RelayKey, PodInfo],
        policy_for: Callable[[str, str], ScalingPolicy],
        now: float,
    ) -> CostPlan:
        """The patches to make now; they count as made (rate limit) once returned."""
        members = _members(fleet, pods)
        fleets: list[FleetScaleIn] = []
        wanted: list[CostPatch] = []
        for (namespace, gateway), group in sorted(members.items()):
            selection = fleet.select(gateway, namespace)
            desired = policy_for(namespace, gateway).desired_replicas(
                selection.allocations, selection.bandwidth
            )
            ready = sum(1 for relay, pod in group if pod.ready and not relay.draining)
            fleets.append(FleetScaleIn(namespace, gateway, desired, ready))
            if desired >= ready:
                continue
            for relay, pod in group:
                cost = clamp_int32(relay.allocations)
                # An absent annotation means cost 0 to the ReplicaSet controller.
                if (pod.deletion_cost if pod.deletion_cost is not None else 0) == cost:
                    continue
                wanted.append(CostPatch(namespace, pod.name, cost, pod.deletion_cost))
        self._forget_missing(pods)
        # Biggest corrections first, in case the budget cannot take them all.
        wanted.sort(key=lambda p: (-abs(p.cost - (p.previous or 0)), p.namespace, p.pod))
        patches: list[CostPatch] = []
        for patch in wanted:
            key = (patch.namespace, patch.pod)
            last = self._last_patch.get(key)
            if last is not None and now - last < self.min_interval:
                continue
            if len(patches) >= self.max_patches:
                break
            patches.append(patch)
            self._last_patch[key] = now
        return CostPlan(patches, fleets, len(wanted) - len(patches))

    def _forget_missing(self, pods: Mapping[RelayKey, PodInfo]) -> None:
        for key in [key for key in self._last_patch if key not in pods]:
            del self._last_patch[key]


def _members(
    fleet: FleetState, pods: Mapping[RelayKey, PodInfo]
) -> dict[GatewayKey, list[tuple[Relay, PodInfo]]]:
    """Relays whose pod exists and is not being deleted, by (namespace, gateway)."""
    groups: dict[GatewayKey, list[tuple[Relay, PodInfo]]] = {}
    for relay in fleet.relays():
        identity = relay.identity
        pod = pods.get((identity.namespace, identity.pod))
        if pod is None or not pod.alive:
            continue
        groups.setdefault((identity.namespace, identity.gateway), []).append((relay, pod))
    return groups
