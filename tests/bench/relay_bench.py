"""TURN relay benchmark: ``turnscale relay`` against coturn's ``turnserver``, same load.

Both servers run pinned to one core (core 0); coturn's load generator ``turnutils_uclient``
and echo peer ``turnutils_peer`` share the other core. Each load runs against coturn first,
then against turnscale relay (on uvloop, and for the paced load also on the standard asyncio
loop). Two loads, channels over UDP, 200-byte messages:

* paced: 20 sessions, one message per millisecond each (``-z 1``), which coturn carries with
  zero loss. The target: turnscale relay at least half of coturn's messages/s, at zero loss.
* flood: 10 sessions sending back to back (``-z 0``). On two cores the load generator and
  the echo peer saturate their core before either server does, so the loss here is mostly
  theirs (socket buffers overflowing in bursts) and varies from run to run.

For each run: messages/s (delivered round trips per second while the sessions send), loss,
uclient's round-trip time, and the server's CPU time. Because the client side caps the rate,
the server's capacity shows in messages per CPU-second: what one saturated core would relay.
Then the memory per allocation of each server with 1000 allocations open (each with a
permission and a channel), opened by a small client built on ``relay.proto.stun``
(tests/relay/turn_client.py).

Everything is on loopback and bounded: each uclient run has a timeout, every wait a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from relay.proto import stun
from tests.bench.common import (
    cpu_seconds,
    free_port,
    missing_tools,
    pin_self_to_client_core,
    rss_kib,
    start_pinned,
    stop,
    table,
    turnutils_peer,
    wait_http,
)
from tests.relay.turn_client import TurnClient

USER, PASSWORD, REALM = "bench", "bench-password", "bench.turnscale"
SIZE = 200


@dataclass(frozen=True)
class Load:
    """A uclient load: sessions (RTP/RTCP pairs), messages each, milliseconds between them."""

    name: str
    sessions: int
    messages: int
    interval: int

    def __str__(self) -> str:
        return f"-m {self.sessions} -n {self.messages} -l {SIZE} -z {self.interval}"


PACED = Load("paced", 20, 10000, 1)
FLOOD = Load("flood", 10, 30000, 0)
UCLIENT_TIMEOUT = 120.0
ALLOCATIONS = 1000
TARGET_RATIO = 0.5
TARGET_KIB = 20.0
STATS = re.compile(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
LOSS = re.compile(r"Total lost packets (\d+) \(([\d.]+)%\)")
RTT = re.compile(r"Average round trip delay ([\d.]+) ms; min = (\d+) ms, max = (\d+) ms")


@dataclass
class LoadResult:
    sent: int = 0
    received: int = 0
    lost: int = -1
    loss_percent: float = float("nan")
    rtt_ms: float = float("nan")
    rtt_max_ms: int = 0
    rate: float = 0.0
    wall: float = 0.0
    cpu: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def capacity(self) -> float:
        """Messages one core of the server relays per CPU second."""
        return self.received / self.cpu if self.cpu > 0 else float("nan")


def run_uclient(
    load: Load, port: int, peer_port: int, server_pid: int, extra: Sequence[str] = ()
) -> LoadResult:
    """One uclient run; stats lines are timestamped as they arrive (line-buffered output).
    ``extra`` adds uclient flags (``-t -S``: TCP with TLS)."""
    uclient = shutil.which("turnutils_uclient")
    assert uclient is not None
    prefix = ["stdbuf", "-oL", "-eL"] if shutil.which("stdbuf") else []
    argv = [
        *prefix,
        uclient,
        *("-m", str(load.sessions), "-n", str(load.messages)),
        *("-l", str(SIZE), "-z", str(load.interval)),
        *("-u", USER, "-w", PASSWORD, "-e", "127.0.0.1", "-r", str(peer_port)),
        *extra,
        *("-p", str(port), "127.0.0.1"),
    ]
    result = LoadResult()
    cpu_before = cpu_seconds(server_pid)
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    deadline = started + UCLIENT_TIMEOUT
    output: list[str] = []
    for line in process.stdout:
        now = time.monotonic()
        output.append(line)
        match = STATS.search(line)
        if match:
            result.sent, result.received = int(match.group(1)), int(match.group(2))
            result.samples.append((now, result.received))
        if now > deadline:
            process.kill()
            break
    process.wait(timeout=10)
    result.wall = time.monotonic() - started
    result.cpu = cpu_seconds(server_pid) - cpu_before
    text = "".join(output)
    loss = LOSS.search(text)
    rtt = RTT.search(text)
    if loss:
        result.lost, result.loss_percent = int(loss.group(1)), float(loss.group(2))
    if rtt:
        result.rtt_ms, result.rtt_max_ms = float(rtt.group(1)), int(rtt.group(3))
    result.rate = _active_rate(result.samples, result.received)
    if not loss:
        print(f"uclient gave no result (exit {process.returncode}):\n{text[-1500:]}")
    return result


def _active_rate(samples: list[tuple[float, int]], total: int) -> float:
    """Delivered messages per second between the first sample that saw any and the first
    that saw them all (uclient's sessions start at random within 1-6 s, so the ramp is in)."""
    first = next(((t, n) for t, n in samples if n > 0), None)
    last = next(((t, n) for t, n in samples if n >= total), None)
    if first is None or last is None or last[0] - first[0] < 0.5:
        return float("nan")
    return (last[1] - first[1]) / (last[0] - first[0])


def stun_ready(port: int, timeout: float = 20.0) -> None:
    """Wait until a STUN Binding request on ``127.0.0.1:port`` gets an answer."""
    request = stun.MessageBuilder(stun.BINDING, stun.MessageClass.REQUEST).encode()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            sock.sendto(request, ("127.0.0.1", port))
            try:
                sock.recvfrom(2048)
                return
            except OSError:
                continue
    raise RuntimeError(f"no STUN answer on port {port}")


def start_coturn(directory: Path, port: int, low: int, high: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("turnserver")
    assert binary is not None
    conf = directory / "turnserver.conf"
    conf.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={port}",
                f"min-port={low}",
                f"max-port={high}",
                "relay-threads=1",
                "lt-cred-mech",
                f"user={USER}:{PASSWORD}",
                f"realm={REALM}",
                "allow-loopback-peers",
                "no-cli",
                "no-tls",
                "no-dtls",
                f"userdb={directory / 'turndb'}",
                f"pidfile={directory / 'turnserver.pid'}",
                "log-file=stdout",
                "simple-log",
                "",
            ]
        )
    )
    process = start_pinned(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    stun_ready(port)
    return process


def start_relay(
    port: int,
    low: int,
    high: int,
    loop: str,
    *,
    transports: Sequence[str] = ("udp", "tcp"),
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """``python -m relay`` pinned to the server core, with ``transports`` on ``port``."""
    health = free_port()
    process = start_pinned(
        [
            sys.executable,
            "-m",
            "relay",
            *(item for t in transports for item in ("--listen", f"{t}://127.0.0.1:{port}")),
            *extra,
            *("--user", f"{USER}:{PASSWORD}", "--realm", REALM, "--allow-loopback-peers"),
            *("--legacy-channels", "--relay-address", "127.0.0.1"),
            *("--relay-ports", f"{low}-{high}", "--health", f"127.0.0.1:{health}"),
            *("--log-level", "warning", "--event-loop", loop),
        ],
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{health}/ready")
    return process


async def open_allocations(port: int, peer: tuple[str, int], count: int) -> list[TurnClient]:
    """``count`` UDP allocations, each with a permission and a channel to ``peer``."""
    clients: list[TurnClient] = []

    async def one() -> TurnClient:
        c = TurnClient(("127.0.0.1", port), USER, PASSWORD, timeout=1.0)
        await c.open()
        await c.allocate()
        await c.channel_bind(0x4000, peer)
        return c

    for start in range(0, count, 50):
        batch = await asyncio.gather(*(one() for _ in range(min(50, count - start))))
        clients.extend(batch)
    return clients


async def memory_per_allocation(pid: int, port: int, peer: tuple[str, int]) -> tuple[int, int]:
    """RSS (KiB) after a warm-up of 20 allocations, then with :data:`ALLOCATIONS` more.

    Every client keeps its socket until the end, so no client port is reused while the
    server may still hold an allocation for it (that would be a 437)."""
    clients = await open_allocations(port, peer, 20)
    await asyncio.sleep(0.5)
    before = rss_kib(pid)
    clients += await open_allocations(port, peer, ALLOCATIONS)
    await asyncio.sleep(0.5)
    after = rss_kib(pid)
    for c in clients:
        c.close()
    return before, after


def coturn_version() -> str:
    binary = shutil.which("turnserver")
    if binary is None:
        return "?"
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return (result.stdout or result.stderr).strip().splitlines()[-1] if result else "?"


def _fmt(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def main() -> None:
    if missing_tools("relay bench", "turnserver", "turnutils_uclient", "turnutils_peer"):
        return
    pin_self_to_client_core()  # uclient and the echo peer inherit the client core
    coturn_name = f"coturn turnserver {coturn_version()}"
    plan = [
        (PACED, [coturn_name, "turnscale relay (uvloop)", "turnscale relay (asyncio)"]),
        (FLOOD, [coturn_name, "turnscale relay (uvloop)"]),
    ]
    loads: dict[Load, dict[str, LoadResult]] = {}
    memory: dict[str, tuple[int, int]] = {}
    with turnutils_peer() as peer_port, tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        for load, servers in plan:
            loads[load] = {}
            for name in servers:
                with _server(name, Path(tmp)) as (port, pid):
                    loads[load][name] = run_uclient(load, port, peer_port, pid)
        for name in (coturn_name, "turnscale relay (uvloop)"):
            with _server(name, Path(tmp)) as (port, pid):
                memory[name] = asyncio.run(
                    memory_per_allocation(pid, port, ("127.0.0.1", peer_port))
                )
    report(loads, memory)


@contextlib.contextmanager
def _server(name: str, tmp: Path) -> Iterator[tuple[int, int]]:
    """Start the named server on a fresh port; yield ``(port, pid)``; stop it."""
    port = free_port()
    if name.startswith("coturn"):
        process = start_coturn(tmp, port, 40000, 44999)
    else:
        process = start_relay(port, 45000, 49999, "asyncio" if "asyncio" in name else "uvloop")
    try:
        yield port, process.pid
    finally:
        stop(process)


def report(loads: dict[Load, dict[str, LoadResult]], memory: dict[str, tuple[int, int]]) -> None:
    for load, results in loads.items():
        print(
            f"\n== TURN relay, {load.name} load: turnutils_uclient {load} (channels over UDP) "
            "against turnutils_peer; server on core 0, client and peer on core 1"
        )
        print(table(_load_rows(results)))
        names = list(results)
        coturn, relay = results[names[0]], results[names[1]]
        if load is PACED:
            met = coturn.lost == 0 and relay.lost == 0 and relay.rate >= TARGET_RATIO * coturn.rate
            print(
                f"target: >= {TARGET_RATIO:g}x coturn's msgs/s at zero loss on one core: "
                f"{'met' if met else 'NOT met'}"
            )
    print(f"\n== memory with {ALLOCATIONS} allocations (each with a permission and a channel)")
    rows: list[list[object]] = [["server", "RSS before KiB", "RSS after KiB", "KiB/allocation"]]
    for name, (before, after) in memory.items():
        rows.append([name, before, after, f"{(after - before) / ALLOCATIONS:.2f}"])
    print(table(rows))
    relay_memory = [value for name, value in memory.items() if name.startswith("turnscale")]
    if relay_memory:
        before, after = relay_memory[0]
        per = (after - before) / ALLOCATIONS
        verdict = "met" if per < TARGET_KIB else "NOT met"
        print(f"target: < {TARGET_KIB:g} KiB per allocation: {verdict}")


def _load_rows(results: dict[str, LoadResult]) -> list[list[object]]:
    rows: list[list[object]] = [
        [
            "server",
            "messages",
            "msgs/s",
            "loss",
            "rtt avg ms",
            "rtt max ms",
            "server CPU s",
            "msgs per CPU-s",
        ]
    ]
    for name, r in results.items():
        rows.append(
            [
                name,
                f"{r.received:,}/{r.sent:,}",
                _fmt(r.rate),
                f"{r.lost} ({r.loss_percent:.2f}%)",
                _fmt(r.rtt_ms, 3),
                r.rtt_max_ms,
                _fmt(r.cpu, 2),
                _fmt(r.capacity),
            ]
        )
    names = list(results)
    coturn = results[names[0]]
    for name in names[1:]:
        r = results[name]
        rows.append(
            [
                f"ratio {name.removeprefix('turnscale ')}/coturn",
                "",
                f"{r.rate / coturn.rate:.2f}x" if coturn.rate > 0 else "n/a",
                "",
                "",
                "",
                "",
                f"{r.capacity / coturn.capacity:.2f}x" if coturn.capacity > 0 else "n/a",
            ]
        )
    return rows


if __name__ == "__main__":
    main()
