"""The real ``promtool check metrics`` finds nothing to complain about in /metrics."""

from __future__ import annotations

import asyncio
import subprocess

import aiohttp

from scaler import wire
from scaler.server import ScalerServer
from tests.reports import as_json, created, deleted, report
from tests.scaler.helpers import samples, scaler_config
from tests.tools import require_tool


async def test_metrics_pass_promtool_lint() -> None:
    promtool = require_tool("promtool")
    server = ScalerServer(scaler_config())
    await server.start()
    try:
        base = f"http://{server.http_address}"
        events: list[wire.Event] = [
            created("a"),
            created("b", "tcp"),
            deleted("a", reason="expired", duration=12.5),
            deleted("b", "tcp", "error", 0.2),
        ]
        bodies = [
            report("relay-a", udp=40, tcp=2, events=events),
            report("relay-b", gateway="other", udp=7, draining=True),
            report("relay-c", namespace="team-2", udp=1, connections={"udp": 3, "tls": 1}),
        ]
        async with aiohttp.ClientSession() as session:
            for body in bodies:
                headers = {"Content-Type": "application/json"}
                async with session.post(f"{base}/v1/reports", data=as_json(body), headers=headers):
                    pass
            async with session.post(f"{base}/v1/reports", data=b"junk") as response:
                assert response.status == 415
            async with session.get(f"{base}/metrics") as response:
                exposition = await response.read()
    finally:
        await server.stop()
    exported = samples(exposition.decode())
    labels = {"namespace": "stunner", "gateway": "other", "pod": "relay-b", "transport": "udp"}
    assert exported[("stunner_allocations_active", frozenset(labels.items()))] == 7
    checked = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""
