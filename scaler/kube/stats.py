"""What the Kubernetes integration counts and exports on ``/metrics``.

:class:`KubeStats` renders the ``turnscale_kubernetes_*`` families; the integration, a
collector of the scaler's registry, fills in the pod counts at scrape time first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# Why a watch ended: the server closed it (its timeout, or a clean EOF), the connection
# broke or went silent, the resourceVersion was too old (410 Gone: list again), or the
# API answered an error.
RESTART_REASONS: Final = ("closed", "dropped", "expired", "error")
OPERATIONS: Final = ("list", "watch", "patch")
PATCH_RESULTS: Final = ("ok", "not_found", "error")


@dataclass
class KubeStats:
    watch_up: bool = False
    restarts: dict[str, int] = field(default_factory=dict)
    api_errors: dict[str, int] = field(default_factory=dict)
    patches: dict[str, int] = field(default_factory=dict)
    relays_removed: int = 0
    deferred_patches: int = 0
    # Set by the integration at scrape time.
    relay_pods: int = 0
    relays_spared: int = 0
    scaling_in: dict[tuple[str, str], bool] = field(default_factory=dict)

    def restarted(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def api_error(self, operation: str) -> None:
        self.api_errors[operation] = self.api_errors.get(operation, 0) + 1

    def patched(self, result: str) -> None:
        self.patches[result] = self.patches.get(result, 0) + 1

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "turnscale_kubernetes_watch_up",
            "1 while the relay pod watch is in sync with the Kubernetes API, else 0",
            value=1 if self.watch_up else 0,
        )
        restarts = CounterMetricFamily(
            "turnscale_kubernetes_watch_restarts",
            "Relay pod watches restarted, by reason (closed, dropped, expired = 410 Gone, error)",
            labels=["reason"],
        )
        for reason in RESTART_REASONS:
            restarts.add_metric([reason], self.restarts.get(reason, 0))
        yield restarts
        errors = CounterMetricFamily(
            "turnscale_kubernetes_api_errors",
            "Failed Kubernetes API calls, by operation (list, watch, patch)",
            labels=["operation"],
        )
        for operation in OPERATIONS:
            errors.add_metric([operation], self.api_errors.get(operation, 0))
        yield errors
        yield GaugeMetricFamily(
            "turnscale_kubernetes_relay_pods",
            "Relay pods the watch shows that exist and are not being deleted",
            value=self.relay_pods,
        )
        yield GaugeMetricFamily(
            "turnscale_kubernetes_relays_spared",
            "Relays silent for longer than --expire-after kept (stale) because their pod exists",
            value=self.relays_spared,
        )
        yield CounterMetricFamily(
            "turnscale_kubernetes_relays_removed",
            "Relays that left the fleet because their pod was deleted",
            value=self.relays_removed,
        )
        patches = CounterMetricFamily(
            "turnscale_kubernetes_deletion_cost_patches",
            "pod-deletion-cost patches of relay pods, by result (ok, not_found, error)",
            labels=["result"],
        )
        for result in PATCH_RESULTS:
            patches.add_metric([result], self.patches.get(result, 0))
        yield patches
        yield CounterMetricFamily(
            "turnscale_kubernetes_deletion_cost_deferred",
            "Out-of-date pod-deletion-costs left for a later round by the rate limit",
            value=self.deferred_patches,
        )
        scaling_in = GaugeMetricFamily(
            "turnscale_kubernetes_scaling_in",
            "1 while a relay fleet wants fewer replicas than it has ready relays "
            "(pod-deletion-cost is kept up to date), else 0",
            labels=["namespace", "gateway"],
        )
        for (namespace, gateway), value in sorted(self.scaling_in.items()):
            scaling_in.add_metric([namespace, gateway], 1 if value else 0)
        yield scaling_in
