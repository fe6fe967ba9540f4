"""The process runtime every command shares: start-up errors, stop signals, task stops."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scaler.common import runtime


def turnscale(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "turnscale"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_a_port_in_use_is_one_line_and_exit_1_on_either_loop(event_loop: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = turnscale(
            "relay",
            *("--user", "a:b", "--listen", f"udp://127.0.0.1:{port}"),
            *("--health", "127.0.0.1:0", "--event-loop", event_loop),
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    entry = json.loads(result.stderr.strip().splitlines()[-1])
    assert entry["event"] == "cannot start" and entry["program"] == "turnscale relay"
    assert f"udp://127.0.0.1:{port}" in entry["error"]


def test_every_command_starts_from_a_plain_install() -> None:
    for command in ("scaler", "relay", "run", "load", "auth"):
        result = turnscale(command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "TURNSCALE_" in result.stdout, command


async def test_first_signal_requests_a_stop_and_the_second_forces_it() -> None:
    async with runtime.StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.requested.wait(), 5)
        assert not signals.forced.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(signals.forced.wait(), 5)
    # The handlers are gone again: SIGINT is Python's default handler once more.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


async def test_cancel_and_wait_ends_a_task_and_keeps_the_caller_running() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(forever())
    await started.wait()
    await runtime.cancel_and_wait(task)
    assert task.cancelled()
    await runtime.cancel_and_wait(task)  # again: nothing happens
    await runtime.cancel_and_wait(None)
