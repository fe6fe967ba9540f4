"""Relays for tests: in-process on loopback with port 0, or as a ``python -m relay`` process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from relay.config import Listen, RelayConfig
from relay.net.server import RelayServer
from scaler import wire
from scaler.common.flags import HostPort
from tests.processes import LoggedProcess

USER, PASSWORD = "alice", "wonderland"
SECRET = "rest-api-secret"
REALM = "turnscale.test"


def relay_config(**overrides: Any) -> RelayConfig:
    """Loopback listeners on port 0, one static user and one REST secret, loopback peers on."""
    base = RelayConfig(
        listen=(
            Listen("udp", HostPort("127.0.0.1", 0)),
            Listen("tcp", HostPort("127.0.0.1", 0)),
        ),
        realm=REALM,
        relay_address="127.0.0.1",
        users=((USER, PASSWORD), ("bob", "builder")),
        auth_secrets=(SECRET,),
        allow_loopback_peers=True,
        health=HostPort("127.0.0.1", 0),
    )
    return dataclasses.replace(base, **overrides)


def report_of(state: wire.RelayState, events: list[wire.Event]) -> wire.Report:
    """A report of ``state`` and ``events`` as a pusher would send it (fixed identity)."""
    return wire.Report(
        version=1,
        relay=wire.RelayIdentity(
            pod="relay-0", namespace="ns", gateway="gw", instance="i1", started_at=1.8e9
        ),
        seq=1,
        sent_at=1.8e9,
        state=state,
        events=events,
    )


#: Every allocation event of each running server, by id(server), as a subscriber sees them.
RECORDED: dict[int, list[wire.Event]] = {}


@contextlib.asynccontextmanager
async def running(config: RelayConfig, **kwargs: Any) -> AsyncIterator[RelayServer]:
    server = RelayServer(config, **kwargs)
    recorded = RECORDED[id(server)] = []
    server.stats.subscribe_events(recorded.append)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        del RECORDED[id(server)]


def address(server: RelayServer, transport: str) -> tuple[str, int]:
    """The bound address of the server's first ``transport`` listener."""
    for item in server.listeners:
        if item.transport == transport:
            return (item.address.host, item.address.port)
    raise LookupError(transport)


#: How long :func:`until` polls before giving up.
UNTIL_TIMEOUT = 5.0


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` every 20 ms, for at most :data:`UNTIL_TIMEOUT` seconds."""
    deadline = time.monotonic() + UNTIL_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


def free_port_pair(host: str = "127.0.0.1") -> int:
    """An even port P with P and P+1 free for UDP right now (outside the ephemeral range)."""
    for port in range(20000, 30000, 2):
        socks = []
        try:
            for candidate in (port, port + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((host, candidate))
            return port
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free UDP port pair")


class RelayProcess(LoggedProcess):
    """``python -m relay`` with loopback listeners; learns its addresses from the JSON log."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        argv = [
            sys.executable,
            "-m",
            "relay",
            *("--listen", "udp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0"),
            *("--health", "127.0.0.1:0", "--realm", REALM),
            *("--user", f"{USER}:{PASSWORD}", "--allow-loopback-peers"),
            *flags,
        ]
        super().__init__("relay", argv, env)
        self.serving = self.wait_for("relay serving")
        udp = next(item for item in self.serving["listen"] if item.startswith("udp://"))
        tcp = next(item for item in self.serving["listen"] if item.startswith("tcp://"))
        self.udp = _host_port(udp.removeprefix("udp://"))
        self.tcp = _host_port(tcp.removeprefix("tcp://"))
        self.health = f"http://{self.serving['health']}"

    def stop(self) -> None:
        self.kill()


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def relay_process(*flags: str, env: dict[str, str] | None = None) -> Iterator[RelayProcess]:
    relay = RelayProcess(*flags, env=env)
    try:
        yield relay
    finally:
        relay.stop()
