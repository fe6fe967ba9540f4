"""The command-line contract: flags, TURNSCALE_* variables, exit codes, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from scaler import config
from scaler.common.flags import ConfigError, HostPort, env_name, parse_duration, parse_host_port


def test_a_scaler_open_to_the_network_needs_a_token_or_pod_bound_reports(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="--token-file FILE") as refused:
        config.load([], environ={})  # 0.0.0.0:8080 and no token
    assert "--kubernetes" in str(refused.value)
    with pytest.raises(ConfigError, match="--token-file"):
        config.load(["--http", "[::]:8080"], environ={})
    for loopback in ("127.0.0.1:8080", "127.0.0.2:8080", "[::1]:8080", "localhost:8080"):
        assert config.load(["--http", loopback], environ={}).token is None
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    assert config.load(["--token-file", str(token)], environ={}).token == "s3cret"
    lab = config.load([], environ={"TURNSCALE_INSECURE_OPEN_REPORTS": "true"})
    assert lab.open_reports and lab.token is None


def test_the_refusal_is_one_line_and_exit_2() -> None:
    result = run_cli(env={"TURNSCALE_HTTP": "0.0.0.0:0", "TURNSCALE_GRPC": "127.0.0.1:0"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--token-file" in result.stderr.splitlines()[0]


def test_defaults_match_the_design() -> None:
    loaded = config.load(["--insecure-open-reports"], environ={})
    assert loaded.http == HostPort("0.0.0.0", 8080)
    assert loaded.grpc == HostPort("0.0.0.0", 9090)
    assert (loaded.policy.min_replicas, loaded.policy.max_replicas) == (2, 10)
    assert loaded.policy.target_per_replica == 100
    assert (loaded.stale_after, loaded.expire_after) == (15.0, 60.0)
    assert (loaded.max_relays, loaded.token, loaded.log_level) == (1000, None, "info")


def test_environment_sets_flags_and_command_line_wins() -> None:
    env = {
        "TURNSCALE_MIN_REPLICAS": "3",
        "TURNSCALE_HTTP": "[::1]:81",
        "TURNSCALE_STALE_AFTER": "2s",
    }
    loaded = config.load(["--min-replicas", "4"], environ=env)
    assert loaded.policy.min_replicas == 4
    assert loaded.http == HostPort("::1", 81)
    assert loaded.stale_after == 2.0


def test_token_file_is_read_and_trimmed(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    assert config.load(["--token-file", str(token)], environ={}).token == "s3cret"


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--min-replicas", "x"], {}, "--min-replicas"),
        ([], {"TURNSCALE_MAX_REPLICAS": "ten"}, "TURNSCALE_MAX_REPLICAS"),
        (["--min-replicas", "5", "--max-replicas", "4"], {}, "--max-replicas"),
        (["--target-per-replica", "0"], {}, "--target-per-replica"),
        (["--http", "nowhere"], {}, "--http"),
        (["--http", "1.2.3.4:99999"], {}, "--http"),
        (["--stale-after", "soon"], {}, "--stale-after"),
        (["--stale-after", "30s", "--expire-after", "10s"], {}, "--expire-after"),
        (["--token-file", "/nonexistent/token"], {}, "--token-file"),
        (["--max-relays", "-1"], {}, "--max-relays"),
        (["--log-level", "loud"], {}, "--log-level"),
        (["--no-such-flag"], {}, "--no-such-flag"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        config.load(argv, environ=env)


def test_parsers() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2m") == 120
    assert parse_duration("7") == 7
    assert parse_host_port(":8080") == HostPort("0.0.0.0", 8080)
    assert str(parse_host_port("[::]:9090")) == "[::]:9090"
    assert env_name("--target-per-replica") == "TURNSCALE_TARGET_PER_REPLICA"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaler", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_bad_flag_exits_2_with_one_clear_line() -> None:
    result = run_cli("--max-replicas", "many")
    assert result.returncode == 2
    assert "--max-replicas" in result.stderr
    assert "Traceback" not in result.stderr
    from_env = run_cli(env={"TURNSCALE_HTTP": "bad"})
    assert from_env.returncode == 2
    assert "TURNSCALE_HTTP" in from_env.stderr


def test_help_lists_every_flag_with_its_variable() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in config.build_parser().flags():
        long_flag = flag.flag
        assert long_flag in result.stdout
        assert env_name(long_flag) in result.stdout.replace("\n", "").replace(" ", "")


def test_turnscale_entry_point_lists_commands() -> None:
    turnscale = Path(sys.executable).parent / "turnscale"
    result = subprocess.run([turnscale, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "scaler" in result.stdout
    unknown = subprocess.run([turnscale, "nope"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2


def test_scaler_process_serves_logs_json_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "scaler", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        started = None
        for _ in range(50):
            line = process.stderr.readline()
            if not line:
                break
            entry = json.loads(line)  # not a TTY: every line is JSON
            if entry["event"] == "scaler serving":
                started = entry
                break
        assert started is not None, "scaler did not report serving"
        with urllib.request.urlopen(f"http://{started['http']}/readyz", timeout=5) as response:
            assert json.load(response)["ready"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        remaining = [json.loads(line) for line in process.stderr.read().splitlines() if line]
        assert any(entry["event"] == "scaler stopped" for entry in remaining)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_address_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--http", f"127.0.0.1:{port}", "--grpc", "127.0.0.1:0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    entry = json.loads(result.stderr.strip().splitlines()[-1])
    assert entry["event"] == "cannot start"
    assert "in use" in entry["error"]


def test_bandwidth_scaling_is_off_by_default_and_takes_units() -> None:
    loopback = ["--http", "127.0.0.1:8080"]
    default = config.load(loopback, environ={})
    assert default.policy.target_bandwidth_per_replica is None
    assert default.bandwidth_window == 30.0
    on = config.load([*loopback, "--target-bandwidth-per-replica", "200Mbit"], environ={})
    assert on.policy.target_bandwidth_per_replica == 25_000_000
    env = {"TURNSCALE_TARGET_BANDWIDTH_PER_REPLICA": "25MB", "TURNSCALE_BANDWIDTH_WINDOW": "1m"}
    from_env = config.load(loopback, environ=env)
    assert from_env.policy.target_bandwidth_per_replica == 25_000_000
    assert from_env.bandwidth_window == 60.0
    for off in ("", "off", "OFF"):
        environ = {"TURNSCALE_TARGET_BANDWIDTH_PER_REPLICA": off}
        assert config.load(loopback, environ=environ).policy.target_bandwidth_per_replica is None


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["--target-bandwidth-per-replica", "200"], {}, "--target-bandwidth-per-replica.*no unit"),
        (["--target-bandwidth-per-replica", "1Mb"], {}, "bits or bytes"),
        ([], {"TURNSCALE_TARGET_BANDWIDTH_PER_REPLICA": "0B"}, "TURNSCALE_TARGET_BANDWIDTH"),
        (["--bandwidth-window", "soon"], {}, "--bandwidth-window"),
        (["--bandwidth-window", "500ms"], {}, "--bandwidth-window .*at least 1s"),
    ],
)
def test_bad_bandwidth_flags_name_the_flag(argv: list[str], env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        config.load(["--http", "127.0.0.1:8080", *argv], environ=env)
