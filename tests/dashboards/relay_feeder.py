"""A fleet of real relays carrying real TURN allocations, for the Prometheus end-to-end test.

:class:`RelayFeeder` satisfies :class:`tests.dashboards.fleet.FleetFeeder` with the real
thing: one ``python -m relay`` process per :class:`Relay` of the fleet, pushing reports to
every scaler replica (``--scaler`` once per replica), and aioice TURN clients in this
process holding each relay's allocations (UDP and TCP), sending traffic through them to a
UDP echo peer. What each relay does wrong is done to the real process:

- ``draining``: its allocations are opened, then it gets SIGTERM (as Kubernetes terminates
  a pod) with a long ``--drain-timeout``: it keeps its allocations and reports
  ``draining: true``;
- ``silent``: once both replicas hold its first report, it gets SIGSTOP: it stops
  reporting without going away, so the scalers see it stale.

Two things are not relays, so they are not real relays here either:

- churn: one extra allocation is opened and the oldest one deleted (Refresh with
  LIFETIME 0) on the first relay of the last gateway every half second, so lifecycle
  counters and the duration histogram keep moving; allocations of the gateways whose
  values the test checks exactly stay put;
- a misconfigured client posting ``text/plain`` to ``/v1/reports`` (refused with 415), as
  :class:`tests.dashboards.fleet.ReportFeeder` does, for the rejected-reports alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from tests.dashboards.fleet import FLEET, Relay
from tests.e2e.clients import Allocation, Clients
from tests.e2e.processes import relay_flags
from tests.relay.servers import RelayProcess
from tests.relay.turn_client import EchoPeer

#: Heartbeat of the relays (--report-interval): well inside the test's 2 s --stale-after.
REPORT_INTERVAL: Final = "0.5s"
#: Traffic and junk every TICK; churn every CHURN_TICKS ticks.
TICK: Final = 0.25
CHURN_TICKS: Final = 2
#: Allocations per relay that carry traffic, and bytes per packet.
TALKERS: Final = 5
PACKET: Final = 160
#: Bound on getting the whole fleet up and seen by every replica.
START_WITHIN: Final = 60.0


@dataclass
class Running:
    relay: Relay
    process: RelayProcess
    clients: Clients


@dataclass
class RelayFeeder:
    """Real relays (one process each) with real allocations, reporting to every replica."""

    relays: tuple[Relay, ...] = FLEET
    junk_per_tick: int = 1
    running: list[Running] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    _peer: asyncio.DatagramTransport | None = None
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self, scalers: Sequence[str]) -> None:
        """Start the fleet; return once every replica holds it as the test expects."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        loop = asyncio.get_running_loop()
        self._peer, _ = await loop.create_datagram_endpoint(EchoPeer, local_addr=("127.0.0.1", 0))
        async with asyncio.timeout(START_WITHIN):
            processes = await asyncio.gather(
                *(asyncio.to_thread(self._spawn, relay, scalers) for relay in self.relays)
            )
            for relay, process in zip(self.relays, processes, strict=True):
                clients = Clients(process.udp, process.tcp)
                self.running.append(Running(relay, process, clients))
            await asyncio.gather(*(self._allocate(item) for item in self.running))
            await self._until_held(scalers, draining=False)
            for item in self.running:
                if item.relay.draining:
                    item.process.process.send_signal(signal.SIGTERM)
                if item.relay.silent:
                    item.process.process.send_signal(signal.SIGSTOP)
            await self._until_held(scalers, draining=True)
        self._task = asyncio.create_task(self._run(list(scalers)), name="relay-feeder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self.running:
            item.clients.abandon()  # the relays go at once: no deletions to wait for
            item.process.stop()  # SIGKILL, which a stopped process takes too
        if self._peer is not None:
            self._peer.close()
        if self._session is not None:
            await self._session.close()

    def _spawn(self, relay: Relay, scalers: Sequence[str]) -> RelayProcess:
        flags = relay_flags(
            list(scalers),
            relay.pod,
            namespace=relay.namespace,
            gateway=relay.gateway,
            interval=REPORT_INTERVAL,
        )
        return RelayProcess(*flags, "--drain-timeout", "3600s")

    async def _allocate(self, item: Running) -> None:
        if item.relay.udp:
            await item.clients.allocate(item.relay.udp, "udp")
        if item.relay.tcp:
            await item.clients.allocate(item.relay.tcp, "tcp")

    async def _until_held(self, scalers: Sequence[str], *, draining: bool) -> None:
        """Until every replica exports each relay with its allocations (and, once
        ``draining``, counts the draining relays out of /v1/scale)."""
        assert self._session is not None
        wanted: dict[tuple[str, str], tuple[int, int]] = {}
        for relay in self.relays:
            key = (relay.namespace, relay.gateway)
            allocations, relays = wanted.get(key, (0, 0))
            if not (draining and relay.draining):  # draining relays are not counted
                allocations, relays = allocations + relay.allocations, relays + 1
            wanted[key] = (allocations, relays)
        while True:
            held = True
            for base in scalers:
                for (namespace, gateway), expected in wanted.items():
                    query = {"namespace": namespace, "gateway": gateway}
                    async with self._session.get(f"{base}/v1/scale", params=query) as answer:
                        scale = await answer.json()
                    held = held and (scale["allocations"], scale["relays"]) == expected
            if held:
                return
            await asyncio.sleep(0.1)

    async def _run(self, scalers: list[str]) -> None:
        churned = self.running[-1]
        tick = 0
        while True:
            await asyncio.sleep(TICK)
            tick += 1
            self._traffic()
            if tick % CHURN_TICKS == 0:
                await self._churn(churned)
            await self._junk(scalers)

    def _traffic(self) -> None:
        """A packet from a few allocations of every relay still serving, through the relay
        to the echo peer and back (what comes back is just drained)."""
        assert self._peer is not None
        peer = self._peer.get_extra_info("sockname")
        payload = bytes(PACKET)
        for item in self.running:
            if item.relay.silent:
                continue
            talkers: list[Allocation] = item.clients.open[:TALKERS]
            for allocation in talkers:
                allocation.transport.sendto(payload, peer)
                while not allocation.receiver.queue.empty():
                    allocation.receiver.queue.get_nowait()

    async def _churn(self, item: Running) -> None:
        """Open one allocation, then delete the oldest UDP one: the count stays."""
        await item.clients.allocate(1)
        oldest = next(a for a in item.clients.open if a.kind == "udp")
        await item.clients.close([oldest])

    async def _junk(self, scalers: list[str]) -> None:
        assert self._session is not None
        for base in scalers:
            for _ in range(self.junk_per_tick):
                try:
                    async with self._session.post(
                        f"{base}/v1/reports",
                        data=b"not a report",
                        headers={"Content-Type": "text/plain"},
                    ) as answer:
                        self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
                except aiohttp.ClientError:
                    # A scaler replica that is down: the relays retry, the rest carry on.
                    self.statuses[0] = self.statuses.get(0, 0) + 1
