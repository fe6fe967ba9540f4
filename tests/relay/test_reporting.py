"""The relay's reporting flags: where reports go and the identity they carry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay import settings
from relay.config import RelayConfig
from relay.reporting.config import ReportingConfig, default_pod
from scaler.common.flags import ConfigError
from tests.net import free_port
from tests.relay.servers import relay_config, running

BASE = ["--user", "a:b", "--relay-address", "127.0.0.1"]


def load(argv: list[str], environ: dict[str, str]) -> RelayConfig:
    """The relay config ``turnscale relay`` runs with, from these flags and variables."""
    return settings.load(argv, environ).relay


def test_defaults_report_nowhere_as_the_hostname() -> None:
    reporting = load(BASE, environ={}).reporting
    assert reporting.scalers == ()
    assert reporting.pod == default_pod()
    assert (reporting.namespace, reporting.gateway, reporting.interval) == (
        "default",
        "stunner-gateway",
        5.0,
    )


def test_downward_api_variables_set_the_identity(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    env = {
        "TURNSCALE_POD": "stunner-6f7c9-xk2p",
        "TURNSCALE_NAMESPACE": "stunner",
        "TURNSCALE_GATEWAY": "udp-gateway",
        "TURNSCALE_SCALER": "http://a.stunner.svc:8080,http://b:8080",
        "TURNSCALE_SCALER_TOKEN_FILE": str(token),
        "TURNSCALE_REPORT_INTERVAL": "2s",
    }
    reporting = load(BASE, environ=env).reporting
    assert reporting.scalers == ("http://a.stunner.svc:8080", "http://b:8080")
    assert (reporting.pod, reporting.namespace, reporting.gateway) == (
        "stunner-6f7c9-xk2p",
        "stunner",
        "udp-gateway",
    )
    assert reporting.token == "s3cret"
    assert "s3cret" not in repr(reporting)
    assert reporting.interval == 2.0


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--scaler", "scaler:8080"], "--scaler"),
        (["--scaler", "ftp://scaler"], "--scaler"),
        (["--scaler", "http://scaler:99999"], "--scaler"),
        (["--pod", "Relay_1"], "--pod"),
        (["--namespace", "a.b"], "--namespace"),
        (["--gateway", "-gw"], "--gateway"),
        (["--report-interval", "0s"], "--report-interval"),
        (["--scaler-token-file", "/nonexistent"], "--scaler-token-file"),
    ],
)
def test_bad_reporting_flags_name_the_flag(argv: list[str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load([*BASE, *argv], environ={})


async def test_status_shows_what_the_pusher_could_not_deliver() -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    reporting = ReportingConfig(scalers=(unreachable,), pod="relay-a", interval=0.1)
    async with (
        running(relay_config(reporting=reporting)) as server,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://{server.health_address}/status"
        status: dict[str, Any] = {}

        async def failing() -> bool:
            async with http.get(url) as response:
                status.update(await response.json())
            scalers = status["reporting"]["scalers"]
            return bool(scalers) and next(iter(scalers.values()))["failing"] >= 2

        for _ in range(200):
            if await failing():
                break
            await asyncio.sleep(0.02)
        assert status["reporting"]["events_dropped"] == 0
        assert next(iter(status["reporting"]["scalers"])) == f"{unreachable}/v1/reports"
    async with (
        running(relay_config()) as quiet,
        aiohttp.ClientSession() as http,
        http.get(f"http://{quiet.health_address}/status") as response,
    ):
        assert (await response.json())["reporting"] is None
