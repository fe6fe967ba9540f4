"""What the scaler really exports, read from a running scaler's /metrics."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import pytest

from scaler import wire
from scaler.scaling import ScalingPolicy
from scaler.server import ScalerServer
from tests.dashboards.expressions import Exported, exported
from tests.reports import as_json, created, deleted, report
from tests.scaler.helpers import scaler_config


async def scrape_a_running_scaler() -> str:
    """The text exposition of a real scaler (HTTP and gRPC up) that took a report, with a
    bandwidth target (its target and deciding series exist only with one)."""
    policy = ScalingPolicy(target_bandwidth_per_replica=25_000_000)
    server = ScalerServer(replace(scaler_config(), policy=policy))
    await server.start()
    try:
        base = f"http://{server.http_address}"
        events: list[wire.Event] = [created("a"), deleted("a", reason="expired")]
        body = as_json(report("relay-a", udp=3, tcp=1, events=events))
        async with aiohttp.ClientSession() as session:
            headers = {"Content-Type": "application/json"}
            async with session.post(f"{base}/v1/reports", data=body, headers=headers) as answer:
                assert answer.status == 202, await answer.text()
            async with session.get(f"{base}/metrics") as answer:
                assert answer.status == 200
                return await answer.text()
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def exported_metrics() -> Exported:
    """Every series name (and its labels) the scaler exports, from its own /metrics."""
    return exported(asyncio.run(scrape_a_running_scaler()))
