"""``turnscale relay`` / ``python -m relay`` as a process: flags, exit codes, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from relay import settings
from scaler.common.flags import env_name
from tests.relay.servers import RelayProcess, relay_process
from tests.relay.turn_client import TurnClient, TurnError, echo_peer

USER = "alice"
PASSWORD = "wonderland"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_help_lists_every_flag_with_its_variable() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    flat = result.stdout.replace("\n", "").replace(" ", "")
    for flag in settings.build_parser().flags():
        long_flag = flag.flag
        assert long_flag in result.stdout
        assert env_name(long_flag) in flat


def test_turnscale_lists_the_relay_command() -> None:
    turnscale = Path(sys.executable).parent / "turnscale"
    result = subprocess.run([turnscale, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "relay" in result.stdout


def test_bad_flag_exits_2_naming_it() -> None:
    result = run_cli("--user", "a:b", "--relay-ports", "9-1")
    assert result.returncode == 2
    assert "--relay-ports" in result.stderr and "Traceback" not in result.stderr
    from_env = run_cli(env={"TURNSCALE_USER": "a:b", "TURNSCALE_TOTAL_QUOTA": "many"})
    assert from_env.returncode == 2 and "TURNSCALE_TOTAL_QUOTA" in from_env.stderr


def test_refuses_to_start_without_credentials() -> None:
    result = run_cli("--listen", "udp://127.0.0.1:0", "--health", "127.0.0.1:0")
    assert result.returncode == 2
    assert "no credentials" in result.stderr


def test_secret_never_reaches_the_output() -> None:
    result = run_cli("--user", "alice:hunter2-secret", "--max-lifetime", "never")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr + result.stdout


def test_port_in_use_is_a_clear_start_up_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_cli(
            "--user", "a:b", "--listen", f"udp://127.0.0.1:{port}", "--health", "127.0.0.1:0"
        )
    assert result.returncode == 1
    assert f"udp://127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_without_allocations_exits_at_once() -> None:
    with relay_process("--drain-timeout", "60s") as relay:
        assert status(f"{relay.health}/ready") == 200
        relay.process.send_signal(signal.SIGTERM)
        assert relay.wait() == 0
        assert relay.wait_for("drain finished")["outcome"] == "drained"
        assert relay.events("relay stopped")


async def test_drain_on_sigterm_keeps_allocations_until_the_timeout() -> None:
    with relay_process("--drain-timeout", "3s") as relay:
        async with (
            echo_peer() as (peer, _),
            TurnClient(relay.udp, USER, PASSWORD) as old,
            TurnClient(relay.udp, USER, PASSWORD) as new,
        ):
            await old.allocate()
            await old.channel_bind(0x4000, peer)
            relay.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(relay.wait_for, "relay draining")
            assert await asyncio.to_thread(status, f"{relay.health}/ready") == 200
            assert await asyncio.to_thread(status, f"{relay.health}/live") == 200
            with pytest.raises(TurnError) as error:
                await new.allocate()
            assert error.value.code == 403
            old.send_channel(0x4000, b"draining but alive")
            assert await old.receive() == (0x4000, b"draining but alive")
            assert await old.refresh() == 600
            assert await asyncio.to_thread(relay.wait) == 0
    assert relay.wait_for("drain finished")["outcome"] == "timeout"
    ended = relay.events("allocation ended")
    assert [entry["reason"] for entry in ended] == ["drained"]
    assert ended[0]["bytes_sent"] == len(b"draining but alive")


async def test_drain_ready_status_not_ready_turns_ready_to_503() -> None:
    flags = ("--drain-timeout", "60s", "--drain-ready-status", "not-ready")
    with relay_process(*flags) as relay:
        async with TurnClient(relay.udp, USER, PASSWORD) as c:
            await c.allocate()
            assert await asyncio.to_thread(status, f"{relay.health}/ready") == 200
            relay.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(relay.wait_for, "relay draining")
            assert await asyncio.to_thread(status, f"{relay.health}/ready") == 503
            assert await c.refresh() == 600
            await c.refresh(0)
            assert await asyncio.to_thread(relay.wait) == 0


async def test_drain_ends_when_the_last_allocation_goes() -> None:
    with relay_process("--drain-timeout", "60s") as relay:
        async with TurnClient(relay.tcp, USER, PASSWORD, transport="tcp") as c:
            await c.allocate()
            relay.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(relay.wait_for, "relay draining")
            await c.refresh(0)
            assert await asyncio.to_thread(relay.wait) == 0
    assert relay.wait_for("drain finished")["outcome"] == "drained"
    assert [entry["reason"] for entry in relay.events("allocation ended")] == ["refresh_zero"]


async def test_second_signal_exits_at_once() -> None:
    with relay_process("--drain-timeout", "60s") as relay:
        async with TurnClient(relay.udp, USER, PASSWORD) as c:
            await c.allocate()
            relay.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(relay.wait_for, "relay draining")
            relay.process.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(relay.wait, 10) == 0
    assert relay.wait_for("drain finished")["outcome"] == "second signal"
    assert [entry["reason"] for entry in relay.events("allocation ended")] == ["drained"]


def test_status_endpoint_and_json_logs() -> None:
    relay = RelayProcess("--total-quota", "5")
    try:
        with urllib.request.urlopen(f"{relay.health}/status", timeout=5) as response:
            body = json.load(response)
        assert body["allocations"] == {"udp": 0, "tcp": 0}
        assert body["draining"] is False
        assert relay.serving["users"] == 1
        assert "wonderland" not in json.dumps(relay.lines)
    finally:
        relay.stop()
