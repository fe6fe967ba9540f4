"""coturn's ``turnutils_uclient`` behind the NAT, ``turnutils_peer`` on the media server:
TURN over UDP, TCP and TLS (``-S``) through the NAT to the relay's public address, relayed
from its cluster side. Every message must come back (channels, RFC 8656 §12)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests import netns
from tests.network.stack import TURN_PORT, Stack, stack
from tests.relay.servers import PASSWORD, USER
from tests.relay.test_coturn import LOAD, Outcome, collect_outcomes
from tests.relay.tls_helpers import Authority
from tests.tools import require_tool

TLS_PORT: Final = 5349
#: turnutils_peer's port on the media server (a fresh namespace: nothing else binds there).
PEER_PORT: Final = 3480
VARIANTS: Final[dict[str, tuple[str, ...]]] = {
    "udp": ("-p", str(TURN_PORT)),
    "tcp": ("-t", "-p", str(TURN_PORT)),
    "tls": ("-t", "-S", "-p", str(TLS_PORT)),
}


@dataclass(frozen=True)
class Run:
    outcomes: dict[str, Outcome]
    #: The relay's "allocation ended" log lines, once every client is done.
    ended: list[dict[str, Any]]


def uclient_argv(topology: netns.NatTopology, uclient: str, flags: tuple[str, ...]) -> list[str]:
    """uclient inside the client namespace, dialling the relay's public address."""
    peer = ("-e", netns.MEDIA, "-r", str(PEER_PORT))
    return topology.client.argv(
        uclient, *LOAD, *flags, "-u", USER, "-w", PASSWORD, *peer, netns.RELAY_PUBLIC
    )


def _every_transport(running: Stack) -> bool:
    return {entry["transport"] for entry in running.relay.events("allocation ended")} == set(
        VARIANTS
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Every variant at once (uclient waits 1-6 s before it sends), through one topology."""
    uclient = require_tool("turnutils_uclient")
    peer_binary = require_tool("turnutils_peer")
    leaf = Authority(Path(tmp_path_factory.mktemp("ca"))).leaf("relay")
    tls = ("--listen", f"tls://{netns.RELAY_PUBLIC}:{TLS_PORT}")
    tls_files = ("--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key))
    with (
        netns.nat_topology() as topology,
        stack(topology, "--legacy-channels", *tls, *tls_files) as running,
    ):
        peer = subprocess.Popen(
            topology.media.argv(peer_binary, "-L", netns.MEDIA, "-p", str(PEER_PORT)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            clients = {
                name: subprocess.Popen(
                    uclient_argv(topology, uclient, flags),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for name, flags in VARIANTS.items()
            }
            outcomes = collect_outcomes(clients)
            # The relay logs each deletion as it handles it: give the last ones a moment.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not _every_transport(running):
                time.sleep(0.05)
            yield Run(outcomes, running.relay.events("allocation ended"))
        finally:
            peer.kill()
            peer.wait(timeout=10)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_uclient_behind_the_nat_has_zero_loss(run: Run, variant: str) -> None:
    outcome = run.outcomes[variant]
    assert outcome.returncode == 0, outcome.output[-2000:]
    sent, received = outcome.totals
    assert sent > 0
    assert (outcome.lost, received) == (0, sent), outcome.output[-2000:]


def test_the_relay_saw_every_client_as_the_nat(run: Run) -> None:
    """Each transport's allocations came from the NAT's public address and were relayed
    from the cluster side."""
    assert {entry["transport"] for entry in run.ended} == set(VARIANTS)
    assert {entry["client"].rpartition(":")[0] for entry in run.ended} == {netns.NAT_PUBLIC}
    assert {entry["relayed"].rpartition(":")[0] for entry in run.ended} == {netns.RELAY_CLUSTER}
