"""TURN over DTLS: ``turnscale relay`` against coturn's ``turnserver``, the same load.

coturn's ``turnutils_uclient -S`` (UDP with DTLS 1.2, channels) against ``turnutils_peer``,
each server pinned to core 0 with the same P-256 certificate from a throw-away CA: delivered
messages per second, loss and server CPU per echoed message, paced
(``-m 10 -n 1000 -l 200 -z 5``) and flood (``-z 0``). Also: full DTLS handshakes per second
each server completes (sequential, a pyOpenSSL client: ClientHello, HelloVerifyRequest,
ClientHello with the cookie, the two flights, close_notify), per second and per server
CPU-second. For reference, the same loads against turnscale on plain UDP in the same run
show what of the cost is the relay's packet path rather than DTLS. Everything is on loopback
and bounded.
"""

from __future__ import annotations

import contextlib
import math
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from OpenSSL import SSL

from tests.bench import tls_bench
from tests.bench.common import (
    cpu_seconds,
    missing_tools,
    pin_self_to_client_core,
    stop,
    table,
    turnutils_peer,
)
from tests.bench.relay_bench import Load, LoadResult, coturn_version
from tests.bench.rounds import (
    FLOOD,
    MESSAGE_ROUNDS,
    PACED,
    Server,
    alternating_loads,
    load_rows,
    print_cpu_ratio,
)
from tests.relay.tls_helpers import Authority, Leaf, drain_bio, dtls_client_context

#: Handshakes per round; the rounds alternate between the servers, both running, so a
#: change in what else runs on the shared cores hits both alike.
HANDSHAKES = 1000
ROUNDS = 5
DTLS_CLIENT = ("-S",)
#: The reference row: turnscale without DTLS, the same loads.
PLAIN_UDP = "turnscale relay, plain UDP"
#: Seconds one handshake may take before the bench gives up on it.
HANDSHAKE_TIMEOUT = 5.0
#: Handshake flights the bench client had to send again (a lost datagram costs ~1 s).
RETRANSMITS = [0]


def dtls_handshake(port: int, context: Any) -> None:
    """One full DTLS handshake with ``127.0.0.1:port``, then close_notify (blocking,
    bounded by :data:`HANDSHAKE_TIMEOUT`; retransmits on OpenSSL's timer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        connection = SSL.Connection(context, None)
        connection.set_connect_state()
        connection.set_ciphertext_mtu(1200)
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        while True:
            try:
                connection.do_handshake()
                done = True
            except SSL.WantReadError:
                done = False
            out = drain_bio(connection)
            if out:
                sock.send(out)
            if done:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("DTLS handshake not done in time")
            sock.settimeout(min(left, connection.DTLSv1_get_timeout() or 1.0))
            try:
                connection.bio_write(sock.recv(65536))
            except TimeoutError:
                RETRANSMITS[0] += 1
                connection.DTLSv1_handle_timeout()
        with contextlib.suppress(SSL.Error):
            connection.shutdown()
        out = drain_bio(connection)
        if out:
            sock.send(out)


@dataclass(frozen=True)
class Handshakes:
    """Sequential handshakes: per second of wall time (a latency figure: the Python client
    and both cores shared), per server CPU-second (the capacity), flights sent again."""

    per_second: float
    per_cpu_second: float
    retransmits: int
    #: Handshakes not done within HANDSHAKE_TIMEOUT (left out of the rates).
    failed: int = 0


def handshakes_per_second(port: int, context: Any, pid: int) -> Handshakes:
    """One round of :data:`HANDSHAKES` sequential handshakes."""
    RETRANSMITS[0] = 0
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    failed = 0
    for _ in range(HANDSHAKES):
        try:
            dtls_handshake(port, context)
        except TimeoutError:
            failed += 1
    wall = time.perf_counter() - started - failed * HANDSHAKE_TIMEOUT
    cpu = cpu_seconds(pid) - cpu
    done = HANDSHAKES - failed
    return Handshakes(done / wall, done / cpu if cpu > 0 else math.inf, RETRANSMITS[0], failed)


def alternating_handshakes(
    names: list[str], tmp: Path, leaf: Leaf, context: Any
) -> dict[str, list[Handshakes]]:
    """:data:`ROUNDS` rounds per server, alternating, both servers up (fresh ones)."""
    rounds: dict[str, list[Handshakes]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(_server(name, tmp, leaf)) for name in names}
        for port, _pid in servers.values():
            for _ in range(10):  # warm-up
                dtls_handshake(port, context)
        for _ in range(ROUNDS):
            for name, (port, pid) in servers.items():
                rounds[name].append(handshakes_per_second(port, context, pid))
    return rounds


@contextlib.contextmanager
def _server(name: str, tmp: Path, leaf: Leaf) -> Iterator[tuple[int, int]]:
    if name.startswith("coturn"):
        process, port = tls_bench.start_coturn(tmp, leaf, dtls=True)
    elif name == PLAIN_UDP:  # up beside the DTLS relay: its own relay ports
        process, port = tls_bench.start_relay(leaf, ("udp",), relay_ports=(50000, 54999))
    else:
        process, port = tls_bench.start_relay(leaf, transports=("dtls",))
    try:
        yield port, process.pid
    finally:
        stop(process)


def main() -> None:
    tools = ("turnserver", "turnutils_uclient", "turnutils_peer", "openssl")
    if missing_tools("DTLS bench", *tools):
        return
    pin_self_to_client_core()
    names = [f"coturn turnserver {coturn_version()}", "turnscale relay (uvloop)"]
    with turnutils_peer() as peer_port, tempfile.TemporaryDirectory(prefix="dtls-bench-") as tmp:
        authority = Authority(Path(tmp) / "ca")
        leaf = authority.leaf("relay")
        context = dtls_client_context(authority)
        with contextlib.ExitStack() as stack:
            servers = {
                name: Server(
                    *stack.enter_context(_server(name, Path(tmp), leaf)),
                    () if name == PLAIN_UDP else DTLS_CLIENT,
                )
                for name in [*names, PLAIN_UDP]
            }
            results = alternating_loads(servers, (PACED, FLOOD), peer_port)
        handshakes = alternating_handshakes(names, Path(tmp), leaf, context)
    report(names, results, handshakes)


def report(
    names: list[str],
    results: dict[Load, dict[str, list[LoadResult]]],
    handshakes: dict[str, list[Handshakes]],
) -> None:
    coturn, relay = names
    for load, by_server in results.items():
        print(
            f"\n== TURN over DTLS, {load.name} load: turnutils_uclient -S {load} against "
            f"turnutils_peer, {MESSAGE_ROUNDS} alternating rounds (summed); server on core 0, "
            "client and peer on core 1"
        )
        print(table(load_rows([*names, PLAIN_UDP], by_server)))
        print_cpu_ratio("turnscale/coturn", by_server[relay], by_server[coturn], goal=1.5)
        print_cpu_ratio(
            "turnscale over DTLS / turnscale on plain UDP", by_server[relay], by_server[PLAIN_UDP]
        )
    print(
        f"\n== DTLS handshakes ({ROUNDS} alternating rounds of {HANDSHAKES} sequential, cookie "
        "exchange included): medians"
    )
    rows = [["server", "handshakes/s", "per server CPU-second", "retransmissions", "failed"]]
    for name in names:
        done = handshakes[name]
        rows.append(
            [
                name,
                f"{statistics.median(h.per_second for h in done):,.0f}",
                f"{statistics.median(h.per_cpu_second for h in done):,.0f}",
                str(sum(h.retransmits for h in done)),
                str(sum(h.failed for h in done)),
            ]
        )
    print(table(rows))
    per_round = [
        (mine.per_second / theirs.per_second, mine.per_cpu_second / theirs.per_cpu_second)
        for mine, theirs in zip(handshakes[relay], handshakes[coturn], strict=True)
    ]
    print(
        "handshakes, turnscale/coturn (median of the rounds): "
        f"{statistics.median(r[0] for r in per_round):.2f} per second, "
        f"{statistics.median(r[1] for r in per_round):.2f} per server CPU-second (goal >= 1)"
    )


if __name__ == "__main__":
    main()
