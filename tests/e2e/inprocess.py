"""In-process pieces for the scenarios a subprocess cannot set up.

- :func:`attach_pusher` gives an in-process :class:`relay.net.server.RelayServer` a report
  pusher built like :func:`relay.reporting.pusher.make_pusher` builds it, with what flags
  cannot set: a name resolver (there is no DNS server on the test machine to make one name
  resolve to two scaler replicas) and the size of the event buffer.
- :class:`Link` is a loopback TCP forwarder in front of a scaler that a test can cut
  (new connections refused, open ones reset: the scaler is unreachable, as when its pod is
  gone or the network partitions) and restore, while the scaler keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from relay.net.server import RelayServer
from relay.reporting.pusher import EVENT_BUFFER, Identity, ReportPusher, Resolver


def attach_pusher(
    server: RelayServer,
    scalers: Sequence[str],
    pod: str,
    *,
    namespace: str,
    gateway: str,
    interval: float = 0.5,
    resolve: Resolver | None = None,
    event_buffer: int = EVENT_BUFFER,
) -> ReportPusher:
    """Wire a pusher into ``server`` (not started yet, built without ``--scaler``)."""
    assert server.pusher is None, "the relay already has a pusher from its flags"
    identity = Identity(
        pod=pod, namespace=namespace, gateway=gateway, started_at=server.stats.started_at
    )
    pusher = ReportPusher(
        scalers,
        identity,
        server.stats,
        interval=interval,
        resolve=resolve,
        event_buffer=event_buffer,
    )
    server.stats.subscribe(pusher.changed)
    server.stats.subscribe_events(pusher.record)
    server.pusher = pusher  # started by server.start(), closed by server.stop()
    return pusher


def resolving_to(*addresses: str) -> Resolver:
    """A resolver answering every name with ``addresses`` (a headless Service's records)."""

    async def resolve(host: str) -> list[str] | None:
        return list(addresses)

    return resolve


@dataclass
class Link:
    """``127.0.0.1:port`` forwarding to ``target`` while up; refusing while cut."""

    target: tuple[str, int]
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._tasks.difference_update(pipes)
            for item in (writer, up_writer):
                self._writers.discard(item)
                item.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


@contextlib.asynccontextmanager
async def link_to(target: tuple[str, int]) -> AsyncIterator[Link]:
    link = Link(target)
    await link.restore()
    try:
        yield link
    finally:
        await link.cut()
