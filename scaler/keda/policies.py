"""The scaling policies KEDA triggers ask for, so exported desired replicas follow them.

A trigger's ``minReplicas``, ``maxReplicas`` and ``targetPerReplica`` change no
gRPC answer (KEDA's HPA does its own arithmetic from the spec and the value), but
``stunner_scaler_desired_replicas`` should show what the trigger's HPA will do.
Every KEDA call records its trigger's policy here; the exporter and the deletion-cost
planner look up the most specific recent one for each gateway (it is their
:class:`scaler.scaling.GatewayPolicies`), and fall back to the flags. Synchronous: the
time is the book's clock unless the caller passes it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from scaler.keda.metadata import Trigger
from scaler.scaling import ScalingPolicy

# KEDA polls IsActive every pollingInterval (30 s by default) and the HPA reads
# GetMetrics every 15 s: a policy not asked for in this long belongs to a trigger
# that is gone or edited.
POLICY_TTL: Final = 600.0
# Bounds memory whatever selections callers invent.
MAX_POLICIES: Final = 1024

Selection = tuple[str | None, str | None]  # (namespace, gateway); None = any


class PolicyBook:
    """The policies KEDA triggers asked for recently, over ``default`` (the flags)."""

    def __init__(
        self,
        default: ScalingPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        ttl: float = POLICY_TTL,
        limit: int = MAX_POLICIES,
    ) -> None:
        self.default = default
        self.clock = clock
        self.ttl = ttl
        self.limit = limit
        self._seen: OrderedDict[Selection, tuple[ScalingPolicy, float]] = OrderedDict()

    def record(self, trigger: Trigger, now: float | None = None) -> None:
        """A KEDA call for ``trigger`` at ``now`` (default: the clock's now)."""
        now = self.clock() if now is None else now
        key = (trigger.namespace, trigger.gateway)
        self._seen[key] = (trigger.policy, now)
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def policy_for(self, namespace: str, gateway: str, now: float | None = None) -> ScalingPolicy:
        """The policy of the most specific recent trigger selecting this gateway."""
        now = self.clock() if now is None else now
        for key in ((namespace, gateway), (None, gateway), (namespace, None), (None, None)):
            seen = self._seen.get(key)
            if seen is not None and now - seen[1] <= self.ttl:
                return seen[0]
        return self.default

    def __len__(self) -> int:
        return len(self._seen)
