"""Shared pieces of the benchmarks: processes pinned to cores, their CPU time, ports,
percentiles, RSS."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.net import free_port
from tests.relay.servers import free_port_pair

__all__ = ["free_port"]

# The server under test gets core 0, the load generator core 1 (machines have two).
SERVER_CORE = "0"
CLIENT_CORE = "1"


#: Linux's CPU-time clock of another process is named by its pid (what glibc's
#: ``clock_getcpuclockid`` returns: ``~pid << 3`` with clock type 2, the scheduler's run time).
_SCHED_CLOCK = 2


def cpu_seconds(pid: int) -> float:
    """CPU seconds process ``pid`` has run (user and kernel, all its threads, those that ended
    too), to the nanosecond: the scheduler's run time through the process's CPU-time clock.
    ``/proc/PID/stat`` gives the same total in 10 ms clock ticks, too coarse for a round of
    a few tenths of a CPU-second, and ``/proc/PID/task/*/schedstat`` misses ended threads."""
    return time.clock_gettime((~pid << 3) | _SCHED_CLOCK)


def pin_self_to_client_core() -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(CLIENT_CORE)})


def start_pinned(argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start a server process pinned to the server core, so figures are per core."""
    prefix = ["taskset", "-c", SERVER_CORE] if shutil.which("taskset") else []
    return subprocess.Popen([*prefix, *argv], **kwargs)  # type: ignore[call-overload, no-any-return]


def missing_tools(bench: str, *tools: str) -> bool:
    """Whether any of ``tools`` is not installed; says so, naming ``bench``."""
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        print(f"\n== {bench} skipped: {', '.join(missing)} not installed (make tools)")
    return bool(missing)


@contextlib.contextmanager
def turnutils_peer() -> Iterator[int]:
    """coturn's UDP echo peer on a loopback port (the port), on this process's core."""
    port = free_port_pair()
    peer = subprocess.Popen(
        [shutil.which("turnutils_peer") or "", "-L", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        peer.terminate()
        peer.wait(timeout=10)


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


def start_scaler(http_port: int, grpc_port: int = 0) -> subprocess.Popen[bytes]:
    """A real scaler process on one core; relays never expire during a bench."""
    process = start_pinned(
        python_argv(
            "-m",
            "scaler",
            "--http",
            f"127.0.0.1:{http_port}",
            "--grpc",
            f"127.0.0.1:{grpc_port}",
            "--log-level",
            "warning",
            "--stale-after",
            "300s",
            "--expire-after",
            "600s",
        )
    )
    wait_http(f"http://127.0.0.1:{http_port}/readyz")
    return process


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(fraction * 1000) - 1]


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def table(rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(str(cell).rjust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
