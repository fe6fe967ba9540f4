"""The benchmarks' server CPU: every thread's run time, to the nanosecond."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.bench.common import cpu_seconds

#: Two threads each run until they have used this much CPU, then the process waits.
BURN = 0.15

CHILD = textwrap.dedent(
    f"""
    import sys, threading, time
    def burn():
        end = time.thread_time() + {BURN}
        while time.thread_time() < end:
            pass
    threads = [threading.Thread(target=burn) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("burnt", flush=True)
    sys.stdin.read()
    """
)


def ticks_seconds(pid: int) -> float:
    """The same total from ``/proc/PID/stat`` (utime + stime, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cpu_seconds_counts_every_thread_and_agrees_with_the_clock_ticks() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"burnt\n"
        used = cpu_seconds(child.pid)
        # Both burning threads are in it (start-up adds a little), not just the main one.
        assert used >= 2 * BURN
        # The kernel's clock-tick total is the same time, truncated to 10 ms ticks.
        assert abs(used - ticks_seconds(child.pid)) < 0.05
    finally:
        child.kill()
        child.wait()
