"""turnscale processes placed in the NAT topology (tests/netns.py), as a deployment places them.

The relay listens on its public address (what a LoadBalancer would forward to), relays from
its cluster-side address and lets clients reach the media range only (``--allow-peer``). The
scaler runs on the relay namespace's loopback and the relay pushes to it; the tests read it
from inside that namespace (:meth:`tests.netns.Namespace.call`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Final

from tests import netns
from tests.e2e.processes import relay_flags
from tests.processes import LoggedProcess
from tests.relay.servers import PASSWORD, REALM, USER
from tests.relay.turn_client import EchoPeer

TURN_PORT: Final = 3478
NAMESPACE: Final = "edge"
GATEWAY: Final = "edge-gateway"
POD: Final = "relay-0"
#: The scaler's target in the tests: a few dozen allocations move the desired replicas.
TARGET_PER_REPLICA: Final = 10
#: Bound on one HTTP request to the scaler.
HTTP_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class Stack:
    """The relay (and optionally its scaler) running in ``topology``."""

    topology: netns.NatTopology
    relay: LoggedProcess
    scaler_http: str | None

    @property
    def turn(self) -> tuple[str, int]:
        """The relay's public TURN address, as clients dial it."""
        return (netns.RELAY_PUBLIC, TURN_PORT)

    def scale(self) -> dict[str, Any]:
        """``GET /v1/scale`` of the scaler, from inside the relay namespace."""
        assert self.scaler_http is not None, "this stack runs no scaler"
        url = f"http://{self.scaler_http}/v1/scale?namespace={NAMESPACE}&gateway={GATEWAY}"

        def get() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
                answer: dict[str, Any] = json.load(response)
                return answer

        return self.topology.relay.call(get)


def relay_argv(topology: netns.NatTopology, *extra: str) -> list[str]:
    """``python -m relay`` inside the relay namespace, listening on the public side."""
    public = f"{netns.RELAY_PUBLIC}:{TURN_PORT}"
    return topology.relay.argv(
        sys.executable,
        *("-m", "relay", "--listen", f"udp://{public}", "--listen", f"tcp://{public}"),
        *("--relay-address", netns.RELAY_CLUSTER, "--allow-peer", netns.CLUSTER),
        *("--realm", REALM, "--user", f"{USER}:{PASSWORD}", "--health", "127.0.0.1:0"),
        *extra,
    )


@contextlib.contextmanager
def _stopped_on_exit(process: LoggedProcess) -> Iterator[LoggedProcess]:
    try:
        yield process
    finally:
        process.kill()


@contextlib.contextmanager
def stack(
    topology: netns.NatTopology,
    *relay_extra: str,
    with_scaler: bool = False,
    scaler_flags: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """The relay (with ``relay_extra`` flags, after its scaler with ``scaler_flags`` when asked
    for) running in ``topology``; both killed on exit."""
    with contextlib.ExitStack() as processes:
        scaler_http = None
        extra = list(relay_extra)
        if with_scaler:
            argv = topology.relay.argv(
                sys.executable,
                *("-m", "scaler", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"),
                *scaler_flags,
            )
            scaler = processes.enter_context(_stopped_on_exit(LoggedProcess("scaler", argv)))
            scaler_http = str(scaler.wait_for("scaler serving")["http"])
            extra += relay_flags(f"http://{scaler_http}", POD, namespace=NAMESPACE, gateway=GATEWAY)
        relay = processes.enter_context(
            _stopped_on_exit(LoggedProcess("relay", relay_argv(topology, *extra)))
        )
        serving = relay.wait_for("relay serving")
        assert serving["relay_address"] == netns.RELAY_CLUSTER
        yield Stack(topology, relay, scaler_http)


@contextlib.asynccontextmanager
async def media_echo(
    topology: netns.NatTopology,
) -> AsyncIterator[tuple[tuple[str, int], EchoPeer]]:
    """A UDP echo peer on the media server's address (a socket of the media namespace served
    by this event loop): ``async with media_echo(topology) as (address, protocol)``."""
    sock = topology.media.socket()
    try:
        sock.bind((netns.MEDIA, 0))
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(EchoPeer, sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        host, port = transport.get_extra_info("sockname")
        yield (host, port), protocol
    finally:
        transport.close()
