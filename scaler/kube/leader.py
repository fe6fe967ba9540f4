"""Which scaler replica exports the fleet: leader election on a ``coordination.k8s.io/v1`` Lease.

Every replica keeps the whole fleet state and answers KEDA; only the leader exports the
per-relay families and ``stunner_scaler_*`` (so ``sum(stunner_allocations_active)`` over
all scrape targets counts each relay once) and patches pod-deletion-cost.

The election itself is kubernetes-asyncio's ``leaderelection`` (a Lease lock, client-go's
algorithm: a follower takes the Lease once its holder has not renewed for the lease
duration). What this module adds is the safety the exporter needs on top of it:

- :attr:`LeaderElector.leading` is derived from the time of the last *successful*
  renewal, measured from before the request was sent: it turns false ``renew_deadline``
  after that, whatever the library's loop is doing (a request that hangs, an API server
  that is gone). Because ``renew_deadline < lease_duration`` and a follower counts the
  lease duration from when it *saw* that renewal, the old leader has stopped exporting
  before any follower can take the Lease: no scrape sees two copies.
- Every Lease request has a deadline, and any error ends the term and starts a new
  candidacy after a backoff, so the loop never dies and never spins.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from secrets import token_hex
from typing import Any

import aiohttp
from kubernetes_asyncio.leaderelection.electionconfig import Config
from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
from kubernetes_asyncio.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from scaler.common import logs
from scaler.common.backoff import Backoff
from scaler.kube.settings import DEFAULT_LEASE, DEFAULT_LEASE_NAME, LeaseTiming

log = logs.get("scaler.kube")


def default_identity() -> str:
    """Unique per process: the pod's host name (its name) and a random suffix."""
    return f"{socket.gethostname()}_{token_hex(4)}"


class _TimedLeaseLock(LeaseLock):
    """A Lease lock whose requests have a deadline and whose successes are timed."""

    def __init__(
        self,
        name: str,
        namespace: str,
        identity: str,
        api_client: Any,
        *,
        call_timeout: float,
        renewed: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        super().__init__(name, namespace, identity, api_client)
        self._call_timeout = call_timeout
        self._renewed = renewed
        self._clock = clock

    async def get(self, name: str, namespace: str) -> Any:
        async with asyncio.timeout(self._call_timeout):
            return await super().get(name, namespace)

    async def create(
        self, name: str, namespace: str, election_record: LeaderElectionRecord
    ) -> bool:
        sent = self._clock()
        async with asyncio.timeout(self._call_timeout):
            created = await super().create(name, namespace, election_record)
        if created:
            self._renewed(sent)
        return created

    async def update(self, name: str, namespace: str, updated_record: LeaderElectionRecord) -> bool:
        sent = self._clock()
        async with asyncio.timeout(self._call_timeout):
            updated = await super().update(name, namespace, updated_record)
        if updated and updated_record.holder_identity == self.identity:
            self._renewed(sent)
        return updated


class LeaderElector:
    """One replica's candidacy for the exporter Lease, for the life of :meth:`run`."""

    def __init__(
        self,
        *,
        name: str = DEFAULT_LEASE_NAME,
        identity: str | None = None,
        timing: LeaseTiming = DEFAULT_LEASE,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api_client: Any = None  # kubernetes_asyncio.client.ApiClient, given to run()
        self.namespace = ""
        self.name = name
        self.identity = identity or default_identity()
        self.timing = timing
        self.clock = clock
        self.on_change = on_change
        self.terms = 0  # how many times this replica became the leader
        self._renewed_at: float | None = None
        self._was_leading = False

    @property
    def leading(self) -> bool:
        """True while the last successful renewal is younger than the renew deadline."""
        renewed = self._renewed_at
        return renewed is not None and self.clock() - renewed < self.timing.renew_deadline

    def _renewed(self, sent: float) -> None:
        self._renewed_at = sent
        self._notice()

    def _notice(self) -> None:
        """Log and report a change of :attr:`leading` (called on renewals and ticks)."""
        leading = self.leading
        if leading == self._was_leading:
            return
        self._was_leading = leading
        if leading:
            self.terms += 1
        log.info(
            "scaler leader" if leading else "scaler follower",
            lease=f"{self.namespace}/{self.name}",
            identity=self.identity,
        )
        if self.on_change is not None:
            self.on_change(leading)

    def _lost(self) -> None:
        self._renewed_at = None
        self._notice()

    async def run(self, api_client: Any, namespace: str) -> None:
        """Stand for election in ``namespace`` forever; only cancellation ends it."""
        self.api_client, self.namespace = api_client, namespace
        backoff = Backoff(float(self.timing.retry_period), float(self.timing.lease_duration))
        ticker = asyncio.ensure_future(self._tick())
        try:
            while True:
                try:
                    await self._term()
                    backoff.reset()
                    delay = float(self.timing.retry_period)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    delay = backoff.next()
                    failures = backoff.failures
                    if failures & (failures - 1) == 0:  # the 1st, 2nd, 4th, 8th ... in a row
                        log.warning(
                            "scaler leader election trouble",
                            lease=f"{self.namespace}/{self.name}",
                            error=f"{type(exc).__name__}: {exc}",
                            failures_in_a_row=failures,
                        )
                self._lost()
                await asyncio.sleep(delay)
        finally:
            ticker.cancel()
            self._lost()

    async def _term(self) -> None:
        """One candidacy: wait to acquire, lead while renewals succeed, then return."""
        timing = self.timing
        lock = _TimedLeaseLock(
            self.name,
            self.namespace,
            self.identity,
            self.api_client,
            call_timeout=float(timing.retry_period),
            renewed=self._renewed,
            clock=self.clock,
        )
        stopped = asyncio.Event()

        async def started() -> None:
            await stopped.wait()

        async def ended() -> None:
            stopped.set()

        config = Config(
            lock=lock,
            lease_duration=timing.lease_duration,
            renew_deadline=timing.renew_deadline,
            retry_period=timing.retry_period,
            onstarted_leading=started,
            onstopped_leading=ended,
        )
        await LeaderElection(config).run()

    async def _tick(self) -> None:
        # Turning follower needs no request: the renew deadline passing is enough.
        while True:
            await asyncio.sleep(0.1)
            self._notice()
