"""TURN over TLS: ``turnscale relay`` against coturn's ``turnserver``, the same load.

coturn's ``turnutils_uclient -t -S`` (TCP with TLS, channels) against ``turnutils_peer``,
each server pinned to core 0 with a certificate from a throw-away CA. coturn loses many
messages over TLS at ``-z 0`` here, so the paced load (``-m 10 -n 1000 -l 200 -z 5``) is
the comparison, the flood figures stand beside it. Also: new TLS connections (sequential:
TCP connect, handshake, close; and the same with an Allocate each, what a TURN client does
first) in alternating rounds with both servers up, per second and per server CPU-second,
and memory per idle TLS connection. coturn 4.6.1 as packaged here
answers a TLS 1.3 ClientHello with a handshake_failure alert, so the handshake comparison
is at TLS 1.2 for both; turnscale's TLS 1.3 rate (what clients get from it) stands beside
it. The bare handshakes also run against the floor (:mod:`tests.bench.tls_floor`: uvloop's
own TLS server with the relay's context and nothing else), what any Python asyncio server
pays before the relay's own work. With HAProxy installed, both kinds of new connection also
run against TLS terminated in compiled code in front of the relay
(:mod:`tests.bench.tls_frontend`: HAProxy forwarding to a ``tcp://`` listener, the two
processes' CPU summed). Everything is on loopback and bounded.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from relay.core.auth import long_term_key
from relay.proto import stun, turn
from relay.proto.stun import MessageBuilder, MessageClass
from tests.bench import relay_bench
from tests.bench.common import (
    cpu_seconds,
    missing_tools,
    pin_self_to_client_core,
    python_argv,
    rss_kib,
    start_pinned,
    stop,
    table,
    turnutils_peer,
)
from tests.bench.relay_bench import (
    PASSWORD,
    REALM,
    USER,
    Load,
    LoadResult,
    coturn_version,
    stun_ready,
)
from tests.bench.rounds import (
    FLOOD,
    MESSAGE_ROUNDS,
    PACED,
    Server,
    alternating_loads,
    load_rows,
    print_cpu_ratio,
)
from tests.bench.tls_frontend import haproxy_version, start_frontend
from tests.net import free_port
from tests.relay.servers import free_port_pair
from tests.relay.tls_helpers import Authority, Leaf
from tests.relay.turn_client import read_stream_message

#: Handshakes per round; the rounds alternate between the servers, both running, so a
#: change in what else runs on the shared cores hits both alike.
HANDSHAKES = 300
ROUNDS = 5
IDLE_CONNECTIONS = 300
#: The comparison row's protocol (coturn's only one) and turnscale's extra TLS 1.3 row.
TLS12 = "TLS 1.2"
TLS13 = "TLS 1.3"
#: What one sequential step does: a bare handshake, or what a TURN client does first.
BARE = "handshake"
ALLOCATE = "handshake + Allocate"
TLS_CLIENT = ("-t", "-S")
#: The floor's name in the handshake rounds (bare handshakes at TLS 1.2 only: it does no TURN).
FLOOR = "floor: uvloop's TLS server, nothing else"
#: TLS terminated by HAProxy in front of the relay's tcp:// listener (with HAProxy installed).
FRONTEND = "HAProxy's TLS + turnscale relay (tcp://)"


def start_coturn(
    directory: Path, leaf: Leaf, *, dtls: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    """coturn with TLS (and with ``dtls``, DTLS on the same port number over UDP); returns
    the process and that port."""
    binary = shutil.which("turnserver")
    assert binary is not None
    plain, tls = free_port(), free_port()
    conf = directory / "turnserver-tls.conf"
    conf.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={plain}",
                f"tls-listening-port={tls}",
                f"cert={leaf.cert}",
                f"pkey={leaf.key}",
                "min-port=40000",
                "max-port=44999",
                "relay-threads=1",
                "lt-cred-mech",
                f"user={USER}:{PASSWORD}",
                f"realm={REALM}",
                "allow-loopback-peers",
                "no-cli",
                *([] if dtls else ["no-dtls"]),
                f"userdb={directory / 'turndb-tls'}",
                f"pidfile={directory / 'turnserver-tls.pid'}",
                "log-file=stdout",
                "simple-log",
                "",
            ]
        )
    )
    process = start_pinned(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    stun_ready(plain)
    return process, tls


def start_floor(leaf: Leaf) -> tuple[subprocess.Popen[bytes], int]:
    """:mod:`tests.bench.tls_floor` serving ``leaf``, pinned like the servers; returns the
    process and its port once it listens."""
    port = free_port()
    argv = python_argv("-m", "tests.bench.tls_floor", str(leaf.cert), str(leaf.key), str(port))
    process = start_pinned(argv, stdout=subprocess.PIPE)
    assert process.stdout is not None
    ready = process.stdout.readline()
    if ready.strip() != b"ready":
        stop(process)
        raise RuntimeError(f"the TLS floor server did not start: {ready!r}")
    return process, port


def start_relay(
    leaf: Leaf,
    transports: tuple[str, ...] = ("tls", "udp"),
    relay_ports: tuple[int, int] = (45000, 49999),
) -> tuple[subprocess.Popen[bytes], int]:
    """``turnscale relay`` with ``transports`` on one port number, served ``leaf``, relaying
    from ``relay_ports`` (two relays up at once get a range each)."""
    # A UDP listener needs a port free for UDP (free_port checks TCP).
    port = free_port_pair() if "dtls" in transports else free_port()
    tls = ("--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key))
    low, high = relay_ports
    process = relay_bench.start_relay(port, low, high, "uvloop", transports=transports, extra=tls)
    return process, port


@dataclass(frozen=True)
class Handshakes:
    """One round of :data:`HANDSHAKES` sequential handshakes."""

    per_second: float
    per_cpu_second: float


def handshake(port: int, context: ssl.SSLContext) -> str:
    """One TCP connect, TLS handshake and close; the protocol version it got."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version() or ""


def _allocate_request() -> MessageBuilder:
    request = MessageBuilder(turn.ALLOCATE, MessageClass.REQUEST)
    return request.add(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17))


def handshake_and_allocate(port: int, context: ssl.SSLContext) -> str:
    """What a TURN client does first (RFC 8656 §7.1): connect, handshake, an Allocate answered
    401, the same signed with REALM and NONCE (RFC 8489 §9.2) answered with success; then
    close. The bench client leaves Nagle's algorithm on, as a plain socket does."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(_allocate_request().encode(fingerprint=True))
        challenge = read_stream_message(tls)
        realm, nonce = challenge.get_text(stun.REALM), challenge.get_text(stun.NONCE)
        assert realm and nonce, f"no 401 challenge: {challenge}"
        signed = _allocate_request()
        for attribute, text in ((stun.USERNAME, USER), (stun.REALM, realm), (stun.NONCE, nonce)):
            signed.add_text(attribute, text)
        key = long_term_key(USER, realm, PASSWORD)
        tls.sendall(signed.encode(integrity_key=key, fingerprint=True))
        answer = read_stream_message(tls)
        assert answer.cls is MessageClass.SUCCESS, f"Allocate refused: {answer}"
        return tls.version() or ""


#: A sequential step by what it does.
STEPS: dict[str, Callable[[int, ssl.SSLContext], str]] = {
    BARE: handshake,
    ALLOCATE: handshake_and_allocate,
}


def handshakes_per_second(
    port: int, context: ssl.SSLContext, pids: tuple[int, ...], step: str = BARE
) -> Handshakes:
    """One round: :data:`HANDSHAKES` sequential ``step``s; the server CPU is that of every
    process in ``pids`` (a front end and the relay behind it)."""
    run = STEPS[step]
    cpu = sum(cpu_seconds(pid) for pid in pids)
    started = time.perf_counter()
    for _ in range(HANDSHAKES):
        run(port, context)
    wall = time.perf_counter() - started
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
    return Handshakes(HANDSHAKES / wall, HANDSHAKES / cpu if cpu > 0 else math.inf)


def versioned(authority: Authority, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context of ``authority`` limited to ``version``."""
    context = authority.client_context()
    context.minimum_version = context.maximum_version = version
    return context


Run = tuple[str, str, str]  # server, protocol, step


def alternating_handshakes(
    names: list[str], tmp: Path, leaf: Leaf, authority: Authority
) -> dict[Run, list[Handshakes]]:
    """:data:`ROUNDS` rounds per (server, protocol, step), alternating, both servers up
    (fresh ones): every server at TLS 1.2, turnscale at TLS 1.3 too; bare handshakes, and
    handshakes each followed by an Allocate; the :data:`FLOOR` bare at TLS 1.2; with HAProxy
    installed, the :data:`FRONTEND` both ways at TLS 1.2."""
    contexts = {
        TLS12: versioned(authority, ssl.TLSVersion.TLSv1_2),
        TLS13: versioned(authority, ssl.TLSVersion.TLSv1_3),
    }
    coturn, relay = names
    runs = [
        (name, version, step)
        for step in (BARE, ALLOCATE)
        for name, version in ((coturn, TLS12), (relay, TLS12), (relay, TLS13))
    ]
    runs.insert(2, (FLOOR, TLS12, BARE))
    extra = [FLOOR]
    if shutil.which("haproxy"):
        runs += [(FRONTEND, TLS12, BARE), (FRONTEND, TLS12, ALLOCATE)]
        extra.append(FRONTEND)
    else:
        print("\n(haproxy is not installed: no rows for TLS terminated in front of the relay)")
    rounds: dict[Run, list[Handshakes]] = {run: [] for run in runs}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(_server(name, tmp, leaf)) for name in [*names, *extra]}
        for name, version, step in runs:
            port, _pids = servers[name]
            for _ in range(10):  # warm-up, and the protocol is the one named
                got = STEPS[step](port, contexts[version])
                assert got == version.replace(" ", "v"), f"{name}: {got} instead of {version}"
        for _ in range(ROUNDS):
            for name, version, step in runs:
                port, pids = servers[name]
                rounds[name, version, step].append(
                    handshakes_per_second(port, contexts[version], pids, step)
                )
    return rounds


def idle_connection_kib(pid: int, port: int, context: ssl.SSLContext) -> float:
    before = rss_kib(pid)
    held = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(context.wrap_socket(raw, server_hostname="127.0.0.1"))
        time.sleep(0.5)
        return (rss_kib(pid) - before) / IDLE_CONNECTIONS
    finally:
        for connection in held:
            connection.close()


@contextlib.contextmanager
def _server(name: str, tmp: Path, leaf: Leaf) -> Iterator[tuple[int, tuple[int, ...]]]:
    """The server ``name`` for the rounds: its TLS port and the processes whose CPU counts."""
    with contextlib.ExitStack() as stack:
        if name == FRONTEND:
            # Its own relay, on relay ports of its own: the relayed sockets of two relays up
            # at once must not meet.
            relay, backend = start_relay(leaf, ("tcp",), (35000, 39999))
            stack.callback(stop, relay)
            frontend, port = start_frontend(tmp, leaf, backend)
            stack.callback(stop, frontend)
            yield port, (frontend.pid, relay.pid)
            return
        if name == FLOOR:
            process, port = start_floor(leaf)
        elif name.startswith("coturn"):
            process, port = start_coturn(tmp, leaf)
        else:
            process, port = start_relay(leaf)
        stack.callback(stop, process)
        yield port, (process.pid,)


def main() -> None:
    tools = ("turnserver", "turnutils_uclient", "turnutils_peer", "openssl")
    if missing_tools("TLS bench", *tools):
        return
    pin_self_to_client_core()
    names = [f"coturn turnserver {coturn_version()}", "turnscale relay (uvloop)"]
    idle: dict[str, float] = {}
    with turnutils_peer() as peer_port, tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        authority = Authority(Path(tmp) / "ca")
        leaf = authority.leaf("relay")
        context = authority.client_context()
        with contextlib.ExitStack() as stack:
            servers = {}
            for name in names:
                port, pids = stack.enter_context(_server(name, Path(tmp), leaf))
                servers[name] = Server(port, pids[0], TLS_CLIENT)
            results = alternating_loads(servers, (PACED, FLOOD), peer_port)
            for name, server in servers.items():
                idle[name] = idle_connection_kib(server.pid, server.port, context)
        handshakes = alternating_handshakes(names, Path(tmp), leaf, authority)
    report(names, results, handshakes, idle)


def report(
    names: list[str],
    results: dict[Load, dict[str, list[LoadResult]]],
    handshakes: dict[Run, list[Handshakes]],
    idle: dict[str, float],
) -> None:
    coturn, relay = names
    for load, by_server in results.items():
        print(
            f"\n== TURN over TLS, {load.name} load: turnutils_uclient -t -S {load} against "
            f"turnutils_peer, {MESSAGE_ROUNDS} alternating rounds (summed); server on core 0, "
            "client and peer on core 1"
        )
        print(table(load_rows(names, by_server)))
        print_cpu_ratio("turnscale/coturn", by_server[relay], by_server[coturn], goal=1.5)
    print(
        f"\n== New TLS connections ({ROUNDS} alternating rounds of {HANDSHAKES} sequential: "
        "TCP connect, handshake, with or without an Allocate (401, then signed), close): medians"
    )
    rows = [["server", "protocol", "each", "per second", "per server CPU-second"]]
    for (name, version, step), done in handshakes.items():
        rows.append(
            [
                name,
                version,
                step,
                f"{statistics.median(h.per_second for h in done):,.0f}",
                f"{statistics.median(h.per_cpu_second for h in done):,.0f}",
            ]
        )
    print(table(rows))
    for step in (BARE, ALLOCATE):
        per_second, per_cpu = _median_ratio(
            handshakes[relay, TLS12, step], handshakes[coturn, TLS12, step]
        )
        print(
            f"{step} at TLS 1.2, turnscale/coturn (median of the rounds): {per_second:.2f} "
            f"per second, {per_cpu:.2f} per server CPU-second (goal >= 1)"
        )
    print_floor(handshakes, coturn, relay)
    print_frontend(handshakes, coturn, relay)
    print(f"\n== Idle TLS connections ({IDLE_CONNECTIONS})")
    rows = [["server", "KiB per idle connection"]]
    for name in names:
        rows.append([name, f"{idle[name]:.1f}"])
    print(table(rows))


def _median_ratio(ours: list[Handshakes], theirs: list[Handshakes]) -> tuple[float, float]:
    """Median per-round ratios (per second, per server CPU-second) of two servers' rounds."""
    pairs = list(zip(ours, theirs, strict=True))
    return (
        statistics.median(o.per_second / t.per_second for o, t in pairs),
        statistics.median(o.per_cpu_second / t.per_cpu_second for o, t in pairs),
    )


def print_floor(handshakes: dict[Run, list[Handshakes]], coturn: str, relay: str) -> None:
    """Where the bare TLS 1.2 handshake's gap lies: the floor against coturn (what Python's
    TLS costs any server), and turnscale against the floor (its own work)."""
    floor = handshakes[FLOOR, TLS12, BARE]
    for label, ours, theirs in (
        ("the floor/coturn", floor, handshakes[coturn, TLS12, BARE]),
        ("turnscale/the floor", handshakes[relay, TLS12, BARE], floor),
    ):
        per_second, per_cpu = _median_ratio(ours, theirs)
        print(
            f"{BARE} at TLS 1.2, {label} (median of the rounds): {per_second:.2f} per second, "
            f"{per_cpu:.2f} per server CPU-second"
        )


def print_frontend(handshakes: dict[Run, list[Handshakes]], coturn: str, relay: str) -> None:
    """Whether TLS terminated in compiled code in front of the relay closes the gap: the
    front end and the relay together against coturn, and against the relay's own TLS."""
    if (FRONTEND, TLS12, BARE) not in handshakes:
        return
    print(f"(the front end: HAProxy {haproxy_version()}, one thread, CPU summed with the relay's)")
    for step in (BARE, ALLOCATE):
        front = handshakes[FRONTEND, TLS12, step]
        for label, theirs in (("coturn", coturn), ("the relay's own TLS", relay)):
            per_second, per_cpu = _median_ratio(front, handshakes[theirs, TLS12, step])
            print(
                f"{step} at TLS 1.2, HAProxy + relay/{label} (median of the rounds): "
                f"{per_second:.2f} per second, {per_cpu:.2f} per server CPU-second"
            )


if __name__ == "__main__":
    main()
