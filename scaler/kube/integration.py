"""The Kubernetes integration around one :class:`ScalerService` (``--kubernetes``).

Built by :class:`scaler.server.ScalerServer` with the gateway policies the exported
desired replicas follow (so scale-in is planned by the same numbers), its advisory
readiness check, and registered on the scaler's registry as a collector.

- Watches the relay pods. A deleted pod's relay leaves the fleet at once (so does one
  whose pod finished, e.g. evicted). A relay whose pod exists but that stopped
  reporting keeps its last allocations, exported as stale (``stunner_relay_up`` 0),
  instead of expiring after ``--expire-after``: a network problem between relays and
  the scaler never shrinks the fleet under live calls.
- While a fleet wants fewer replicas than it has ready relays, keeps each relay pod's
  ``pod-deletion-cost`` at its active allocations (:mod:`scaler.kube.cost`).

API trouble never touches ingest, metrics or KEDA answers: they read memory only. It
shows as the advisory ``kubernetes`` check in ``/readyz`` (it does not make the scaler
unready: every replica would drop out of its Services at once and scaling would stop)
and in the ``turnscale_kubernetes_*`` metrics. While the watch is down, the last pod
list is trusted for up to ``--expire-after``; after that silent relays expire as
without Kubernetes, because deleted pods can no longer be told apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Container, Iterator
from typing import Final

import aiohttp
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from scaler.common import logs
from scaler.common.backoff import Backoff
from scaler.common.kube import client as kube_client
from scaler.common.kube.access import KubeAccess
from scaler.common.kube.reflector import DEFAULT_TIMING, WatchTiming, status_message
from scaler.common.runtime import cancel_and_wait
from scaler.fleet import RelayKey
from scaler.kube.cost import CostPatch, CostPlanner
from scaler.kube.leader import LeaderElector
from scaler.kube.pods import POD_DELETION_COST, PodInfo, PodView
from scaler.kube.settings import KubeSettings
from scaler.kube.stats import KubeStats
from scaler.kube.watch import PodWatcher
from scaler.readiness import Check
from scaler.scaling import GatewayPolicies
from scaler.service import ScalerService

log = logs.get("scaler.kube")

# The name of the integration's advisory readiness check.
CHECK: Final = "kubernetes"
PATCH_TIMEOUT: Final = 10.0

Connect = Callable[[KubeAccess], Awaitable[kube_client.KubeClient]]


class KubeIntegration(Collector):
    """The relay pod watch and the deletion-cost rounds; ``collect()`` is its metrics.

    ``check`` is set while the watch is in sync (advisory: see the module docstring);
    ``policies`` give each gateway's desired replicas, as on ``/metrics``.
    """

    def __init__(
        self,
        service: ScalerService,
        settings: KubeSettings,
        policies: GatewayPolicies,
        check: Check,
        *,
        leader: LeaderElector,
        view: PodView,
        timing: WatchTiming = DEFAULT_TIMING,
        connect: Connect = kube_client.connect,
    ) -> None:
        self.service = service
        self.leader = leader
        self.settings = settings
        self.policies = policies
        self.check = check
        self.timing = timing
        self._connect = connect
        self.view = view
        self.stats = KubeStats()
        interval = settings.deletion_cost_interval
        self.planner = CostPlanner(min_interval=interval) if interval > 0 else None
        self.client: kube_client.KubeClient | None = None
        self.watcher: PodWatcher | None = None
        self._down_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start in the background: nothing here waits on the API."""
        self._tasks.append(asyncio.create_task(self._run(), name="kubernetes-watch"))
        if self.planner is not None:
            self._tasks.append(asyncio.create_task(self._costs(), name="kubernetes-cost"))

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        if self.client is not None:
            await self.client.close()
            self.client = None
        self.health(False)

    async def _run(self) -> None:
        backoff = Backoff(self.timing.backoff_initial, self.timing.backoff_max)
        while self.client is None:
            try:
                self.client = await self._connect(self.settings.access)
            except kube_client.ClientSetupError as exc:
                self.health(False)
                log.error("kubernetes client setup failed", error=str(exc))
                await asyncio.sleep(backoff.next())
        log.info(
            "kubernetes integration",
            server=self.client.server,
            namespace=self.client.namespace,
            selector=str(self.settings.relay_selector),
            deletion_cost_interval=self.settings.deletion_cost_interval or "off",
            lease=f"{self.client.namespace}/{self.settings.lease_name}",
            identity=self.leader.identity,
        )
        self.view.namespace = self.client.namespace
        # The election runs beside the watch; both end with this task.
        election = asyncio.ensure_future(
            self.leader.run(self.client.api_client, self.client.namespace)
        )
        try:
            await self._watch()
        finally:
            await cancel_and_wait(election)

    async def _watch(self) -> None:
        assert self.client is not None
        self.watcher = PodWatcher(
            self.client.core,
            self.client.namespace,
            str(self.settings.relay_selector),
            self,
            self.stats,
            timing=self.timing,
        )
        await self.watcher.run()

    # ---- the watch's events (scaler.kube.watch.PodEvents) -------------------

    def listed(self, pods: list[PodInfo]) -> None:
        for key in self.view.replace(pods):
            self._gone(key, "not in the pod list any more")
        for pod in pods:
            if not pod.alive and not pod.terminating:
                self._gone(pod.key, f"pod phase {pod.phase}")

    def changed(self, event_type: str, pod: PodInfo) -> None:
        if self.view.apply(event_type, pod):
            self._gone(pod.key, "pod deleted")
        elif not pod.alive and not pod.terminating:
            self._gone(pod.key, f"pod phase {pod.phase}")

    def health(self, up: bool) -> None:
        if up:
            self._down_since = None
        elif self.stats.watch_up or self._down_since is None:
            self._down_since = self.service.clock()
        self.stats.watch_up = up
        self.check.ok = up

    def _gone(self, key: RelayKey, why: str) -> None:
        if self.service.remove_relay(*key):
            self.stats.relays_removed += 1
            log.info("relay left the fleet", namespace=key[0], pod=key[1], reason=why)

    # ---- expiry ------------------------------------------------------------

    def trusted(self, now: float) -> bool:
        """Whether the pod view may still decide which silent relays stay."""
        if not self.view.listed:
            return False
        if self.stats.watch_up:
            return True
        down_since = self._down_since
        return down_since is not None and now - down_since <= self.service.fleet.expire_after

    def spared(self) -> Container[RelayKey]:
        """Relays whose pod exists: ``FleetState.expire`` leaves them (stale) in place."""
        return self.view.alive() if self.trusted(self.service.clock()) else ()

    # ---- deletion cost -----------------------------------------------------

    async def _costs(self) -> None:
        assert self.planner is not None
        while True:
            await asyncio.sleep(self.settings.deletion_cost_interval)
            await self.update_costs()

    async def update_costs(self) -> int:
        """One planning round; returns the patches made. Only on an in-sync view, and only
        by the leader (two replicas patching would fight over the same annotations)."""
        if self.planner is None or self.client is None or not self.stats.watch_up:
            return 0
        if not self.leader.leading:
            return 0
        plan = self.planner.plan(
            self.service.fleet,
            self.view.as_mapping(),
            self.policies.policy_for,
            self.service.clock(),
        )
        self.stats.scaling_in = {(f.namespace, f.gateway): f.scaling_in for f in plan.fleets}
        self.stats.deferred_patches = plan.deferred
        done = 0
        for patch in plan.patches:
            done += await self._patch(patch)
        if plan.patches:
            log.info(
                "pod-deletion-cost updated",
                patched=done,
                attempted=len(plan.patches),
                deferred=plan.deferred,
            )
        return done

    async def _patch(self, patch: CostPatch) -> int:
        assert self.client is not None
        body = {"metadata": {"annotations": {POD_DELETION_COST: str(patch.cost)}}}
        try:
            response = await self.client.core.patch_namespaced_pod(
                patch.pod,
                patch.namespace,
                body,
                _preload_content=False,
                _request_timeout=PATCH_TIMEOUT,
            )
            async with response:
                status = response.status
                answer = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return self._patch_failed(patch, f"{type(exc).__name__}: {exc}")
        if status == 200:
            self.stats.patched("ok")
            return 1
        if status == 404:
            self.stats.patched("not_found")  # deleted meanwhile; the watch will say so
            return 0
        return self._patch_failed(patch, f"{status}: {status_message(answer)}")

    def _patch_failed(self, patch: CostPatch, what: str) -> int:
        self.stats.patched("error")
        self.stats.api_error("patch")
        log.warning(
            "pod-deletion-cost patch failed",
            namespace=patch.namespace,
            pod=patch.pod,
            cost=patch.cost,
            error=what,
        )
        return 0

    # ---- metrics -----------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The ``turnscale_kubernetes_*`` families, with the pod counts of this scrape."""
        now = self.service.clock()
        alive = self.view.alive()
        self.stats.relay_pods = len(alive)
        spared = alive if self.trusted(now) else frozenset()
        expire_after = self.service.fleet.expire_after
        self.stats.relays_spared = sum(
            1
            for relay in self.service.fleet.relays()
            if now - relay.last_seen > expire_after
            and (relay.identity.namespace, relay.identity.pod) in spared
        )
        return self.stats.collect()
