"""Real TURN clients for the end-to-end tests: aioice allocations and traffic through them.

aioice is a third-party TURN client (the one aiortc uses): it allocates with the long-term
credential dance, refreshes by itself, binds a channel on the first packet to a peer and
deletes its allocation (Refresh with LIFETIME 0) when closed. The peer is the UDP echo
peer of tests/relay/turn_client.py, so every packet crosses the relay twice: client side in,
peer side out, peer side in, client side out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aioice.turn import TurnTransport, create_turn_endpoint

from tests.relay.servers import PASSWORD, USER

Address = tuple[str, int]

#: Bound on one allocation, one echo or one deletion.
TIMEOUT: Final = 10.0
#: Allocate transactions in flight at once (a burst the relay can take on 2 cores).
OPENING: Final = 32


class Receiver(asyncio.DatagramProtocol):
    """The application on top of one TURN allocation: queues what comes back."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


@dataclass
class Allocation:
    transport: TurnTransport
    receiver: Receiver
    kind: str  # "udp" or "tcp": the client's transport to the relay

    @property
    def relayed(self) -> Address:
        host, port = self.transport.get_extra_info("sockname")
        return (host, port)


@dataclass
class Clients:
    """Allocations against one relay; closes whatever is still open on exit."""

    relay_udp: Address
    relay_tcp: Address | None = None
    username: str = USER
    password: str = PASSWORD
    open: list[Allocation] = field(default_factory=list)
    #: Allocations opened and deleted through this object, for event bookkeeping.
    opened: int = 0
    closed: int = 0

    async def allocate(self, count: int, kind: str = "udp") -> list[Allocation]:
        """Open ``count`` allocations (at most :data:`OPENING` at once); all must succeed."""
        gate = asyncio.Semaphore(OPENING)
        server = self.relay_udp if kind == "udp" else self.relay_tcp
        assert server is not None, f"no {kind} address for this relay"

        async def one() -> Allocation:
            async with gate:
                transport, receiver = await asyncio.wait_for(
                    create_turn_endpoint(
                        Receiver,
                        server_addr=server,
                        username=self.username,
                        password=self.password,
                        transport=kind,
                    ),
                    TIMEOUT,
                )
            allocation = Allocation(transport, receiver, kind)
            self.open.append(allocation)
            self.opened += 1
            return allocation

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def echo(
        self, peer: Address, size: int = 100, rounds: int = 1, among: Sequence[Allocation] = ()
    ) -> int:
        """Each allocation (or those in ``among``) sends ``rounds`` packets of ``size`` bytes
        to the echo ``peer`` and waits for each to come back; returns the bytes sent."""
        chosen = list(among or self.open)

        async def one(allocation: Allocation) -> None:
            for index in range(rounds):
                payload = index.to_bytes(4, "big") + bytes(size - 4)
                allocation.transport.sendto(payload, peer)
                got = await asyncio.wait_for(allocation.receiver.queue.get(), TIMEOUT)
                assert got == payload

        await asyncio.gather(*(one(allocation) for allocation in chosen))
        return len(chosen) * rounds * size

    async def close(self, allocations: Iterable[Allocation] | None = None) -> None:
        """Delete allocations (all by default) and wait for the relay to confirm each."""
        chosen = list(self.open if allocations is None else allocations)
        for allocation in chosen:
            self.open.remove(allocation)
            allocation.transport.close()
        await asyncio.gather(*(asyncio.wait_for(a.receiver.closed.wait(), TIMEOUT) for a in chosen))
        self.closed += len(chosen)

    def abandon(self) -> None:
        """Forget every allocation without waiting: for a relay that is gone (deleting
        would retransmit for half a minute). The deletions still run in the background
        until the event loop ends."""
        for allocation in self.open:
            allocation.transport.close()
        self.open.clear()


@contextlib.asynccontextmanager
async def clients_of(
    relay_udp: Address, relay_tcp: Address | None = None
) -> AsyncIterator[Clients]:
    """``async with clients_of(relay.udp, relay.tcp) as clients``: deletes leftovers on exit
    (bounded, a dead relay does not hold the test up)."""
    clients = Clients(relay_udp, relay_tcp)
    try:
        yield clients
    finally:
        leftovers = list(clients.open)
        clients.abandon()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*(a.receiver.closed.wait() for a in leftovers))
