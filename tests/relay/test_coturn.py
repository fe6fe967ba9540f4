"""coturn's test client (``turnutils_uclient``) and echo peer (``turnutils_peer``) against a
``python -m relay`` process: every variant must deliver every message.

coturn's client still picks channel numbers from RFC 5766's range (0x4000-0x7FFF), which
RFC 8656 narrowed to 0x4000-0x4FFF, so the relay runs with ``--legacy-channels``.

uclient waits a random 1-6 s before sending, so all variants run at once, started by one
module fixture; each test then checks its variant's report.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.relay.servers import PASSWORD, USER, RelayProcess, free_port_pair, relay_process
from tests.tools import require_tool

SECRET = "coturn-rest-secret"
#: Sessions, messages per session, message size, ms between messages: small and quick.
LOAD = ("-m", "4", "-n", "100", "-l", "120", "-z", "5")
VARIANTS: dict[str, tuple[str, ...]] = {
    "udp channels": (),
    "udp send indications": ("-s",),
    "udp client-to-client": ("-y",),
    "udp dont-fragment": ("-g",),
    "tcp channels": ("-t",),
    "tcp send indications": ("-t", "-s"),
    "tcp client-to-client": ("-t", "-y"),
    "udp rest credentials": ("-W", SECRET),
    "tcp rest credentials": ("-t", "-W", SECRET),
}
LOSS = re.compile(r"Total lost packets (\d+)")
TOTALS = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str

    @property
    def lost(self) -> int:
        match = LOSS.search(self.output)
        assert match, f"no loss line in uclient output:\n{self.output[-2000:]}"
        return int(match.group(1))

    @property
    def totals(self) -> tuple[int, int]:
        match = TOTALS.search(self.output)
        assert match, f"no totals in uclient output:\n{self.output[-2000:]}"
        return int(match.group(1)), int(match.group(2))


def collect_outcomes(running: dict[str, subprocess.Popen[str]]) -> dict[str, Outcome]:
    """Wait for each client (bounded: 60 s, then killed); its exit code and output."""
    results: dict[str, Outcome] = {}
    for name, process in running.items():
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        results[name] = Outcome(process.returncode, output)
    return results


def uclient_argv(
    uclient: str, relay: RelayProcess, peer_port: int, flags: tuple[str, ...]
) -> list[str]:
    port = relay.tcp[1] if "-t" in flags else relay.udp[1]
    credentials = ("-u", "web-client") if "-W" in flags else ("-u", USER, "-w", PASSWORD)
    return [
        uclient,
        *LOAD,
        *flags,
        *credentials,
        *("-e", "127.0.0.1", "-r", str(peer_port), "-p", str(port)),
        "127.0.0.1",
    ]


@pytest.fixture(scope="module")
def outcomes() -> Iterator[dict[str, Outcome]]:
    uclient = require_tool("turnutils_uclient")
    peer_binary = require_tool("turnutils_peer")
    peer_port = free_port_pair()
    peer = subprocess.Popen(
        [peer_binary, "-L", "127.0.0.1", "-p", str(peer_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with relay_process("--legacy-channels", "--auth-secret", SECRET) as relay:
            running = {
                name: subprocess.Popen(
                    uclient_argv(uclient, relay, peer_port, flags),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for name, flags in VARIANTS.items()
            }
            yield collect_outcomes(running)
    finally:
        peer.terminate()
        peer.wait(timeout=10)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_uclient_variant_has_zero_loss(outcomes: dict[str, Outcome], variant: str) -> None:
    outcome = outcomes[variant]
    assert outcome.returncode == 0, outcome.output[-2000:]
    assert " error " not in outcome.output, outcome.output[-2000:]
    sent, received = outcome.totals
    assert sent > 0
    assert (outcome.lost, received) == (0, sent), outcome.output[-2000:]
