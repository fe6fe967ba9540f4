"""Leader election on a Lease through the fake API server and the real kubernetes-asyncio
client: one exporter at a time, failover within the lease duration, and a leader that
cannot renew stops leading before anyone else can take over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from scaler.common.kube.access import KubeAccess
from scaler.common.kube.client import KubeClient, connect
from scaler.kube.leader import LeaderElector
from scaler.kube.settings import LeaseTiming
from tests.k8s_fake import FakeKubeApi

TIMING = LeaseTiming(lease_duration=3, renew_deadline=2, retry_period=1)


class Candidates:
    """Electors on their own clients, sampled every 50 ms for two leaders at once."""

    def __init__(self, api: FakeKubeApi, directory: Path) -> None:
        self.api = api
        self.directory = directory
        self.electors: list[LeaderElector] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.clients: list[KubeClient] = []
        self.overlaps = 0
        self._sampler: asyncio.Task[None] | None = None

    async def add(self, identity: str) -> LeaderElector:
        kube = await connect(KubeAccess(self.api.kubeconfig(self.directory)))
        self.clients.append(kube)
        elector = LeaderElector(identity=identity, timing=TIMING)
        self.electors.append(elector)
        self.tasks[identity] = asyncio.ensure_future(elector.run(kube.api_client, "stunner"))
        if self._sampler is None:
            self._sampler = asyncio.ensure_future(self._sample())
        return elector

    async def _sample(self) -> None:
        while True:
            if sum(elector.leading for elector in self.electors) > 1:
                self.overlaps += 1
            await asyncio.sleep(0.05)

    def leaders(self) -> list[str]:
        return [e.identity for e in self.electors if e.leading]

    async def kill(self, identity: str) -> None:
        """Like SIGKILL: the candidacy just stops, the Lease is not released."""
        task = self.tasks.pop(identity)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.electors = [e for e in self.electors if e.identity != identity]

    async def close(self) -> None:
        for task in [*self.tasks.values(), self._sampler]:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for kube in self.clients:
            await kube.close()


@pytest.fixture
async def candidates(tmp_path: Path) -> AsyncIterator[Candidates]:
    api = FakeKubeApi()
    await api.start()
    group = Candidates(api, tmp_path)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(api.stop)
        stack.push_async_callback(group.close)
        yield group


async def within(seconds: float, check: Callable[[], bool], what: str) -> float:
    """Poll ``check`` every 50 ms; the seconds it took, or fail naming ``what``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_one_leader_and_failover_within_the_lease_duration(
    candidates: Candidates,
) -> None:
    await candidates.add("scaler-a")
    await candidates.add("scaler-b")
    await within(5, lambda: len(candidates.leaders()) == 1, "a leader")
    await asyncio.sleep(2 * TIMING.lease_duration)  # several renewals: it stays leader
    (first,) = candidates.leaders()
    lease = candidates.api.get("Lease", "turnscale-scaler")
    assert lease is not None and lease["spec"]["holderIdentity"] == first
    await candidates.kill(first)
    took = await within(
        TIMING.lease_duration + 2 * TIMING.retry_period + 1,
        lambda: len(candidates.leaders()) == 1,
        "the follower takes over",
    )
    assert candidates.leaders() != [first]
    assert took <= TIMING.lease_duration + 2 * TIMING.retry_period + 1
    assert candidates.overlaps == 0


@pytest.mark.parametrize("outage", ["down", "stalled"])
async def test_a_leader_that_cannot_renew_stops_before_another_can_lead(
    candidates: Candidates, outage: str
) -> None:
    a = await candidates.add("scaler-a")
    await within(5, lambda: a.leading, "scaler-a leads")
    b = await candidates.add("scaler-b")
    await asyncio.sleep(TIMING.retry_period * 2)
    assert a.leading and not b.leading
    # Nobody can renew or acquire: the API refuses connections, or takes them and never
    # answers (then only the leader's own deadlines end its term).
    if outage == "down":
        await candidates.api.stop()
    else:
        candidates.api.stall()
    stopped_after = await within(
        TIMING.renew_deadline + 0.5, lambda: not a.leading, "the leader stops leading"
    )
    assert stopped_after <= TIMING.renew_deadline + 0.5
    await asyncio.sleep(TIMING.lease_duration)
    assert candidates.leaders() == []  # no API, no leader: nothing exported twice
    if outage == "down":
        await candidates.api.start()  # the same port
    else:
        candidates.api.resume()
    await within(
        TIMING.lease_duration * 3, lambda: len(candidates.leaders()) == 1, "a leader again"
    )
    assert candidates.overlaps == 0
    assert a.terms + b.terms >= 2
