"""Reports bound to their pods, with real processes: a ``python -m scaler --kubernetes``
against the fake API server, real relays pushing to it, and a forger that knows the token.

On loopback every pod's IP is 127.0.0.1; the forger sends from 127.0.0.2 (another address
of the loopback range), as another pod of the cluster would send from its own IP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

from tests.e2e.clients import clients_of
from tests.e2e.processes import ScalerProcess, pushing_relay
from tests.k8s_fake import FakeKubeApi
from tests.relay.servers import RelayProcess
from tests.reports import as_json, report
from tests.waiting import eventually

NAMESPACE: Final = "stunner"
GATEWAY: Final = "stunner-gateway"
TOKEN: Final = "shared-relay-token"


async def post(
    scaler: ScalerProcess, body: bytes, *, source: str = "127.0.0.1"
) -> tuple[int, dict[str, Any]]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"{scaler.base}/v1/reports",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        ) as answer,
    ):
        return answer.status, json.loads(await answer.read())


async def scale(scaler: ScalerProcess) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{scaler.base}/v1/scale", params={"gateway": GATEWAY}) as answer,
    ):
        result: dict[str, Any] = await answer.json()
        return result


async def test_a_forger_with_the_token_cannot_take_over_or_lock_out_a_pod(
    tmp_path: Path,
) -> None:
    api = FakeKubeApi()
    await api.start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(api.stop)
        api.add_pod("relay-a", namespace=NAMESPACE, ip="127.0.0.1")
        api.add_pod("relay-b", namespace=NAMESPACE, ip="127.0.0.1")
        scaler = await asyncio.to_thread(
            ScalerProcess,
            *("--kubernetes", "--kubeconfig", str(api.kubeconfig(tmp_path))),
            *("--relay-namespace", NAMESPACE, "--token-file", str(token_file)),
            *("--max-relays", "1"),
        )
        stack.callback(scaler.stop)

        async def relay_pod(name: str) -> RelayProcess:
            """A real relay reporting as pod ``name`` with the shared token."""
            flags = ("--scaler-token-file", str(token_file))
            relay = pushing_relay(scaler.base, name, *flags, namespace=NAMESPACE, gateway=GATEWAY)
            return await asyncio.to_thread(stack.enter_context, relay)

        relay = await relay_pod("relay-a")
        clients = await stack.enter_async_context(clients_of(relay.udp))
        await clients.allocate(3)

        async def counted(allocations: int, relays: int) -> bool:
            answer = await scale(scaler)
            return bool(answer["allocations"] == allocations and answer["relays"] == relays)

        await eventually(lambda: counted(3, 1), "the real relay counted", within=20)

        # Another pod of the cluster, with the shared token, claims to be a newer relay-a
        # with no allocations: refused, and the real relay keeps its place.
        forged = report("relay-a", instance="forged", started_at=time.time(), udp=0)
        status, body = await post(scaler, as_json(forged), source="127.0.0.2")
        assert status == 403 and "not that pod's IP" in body["error"]
        # From the pod's own address, a start "from the future" is refused as well.
        future = report("relay-a", instance="future", started_at=time.time() + 3600, udp=0)
        status, body = await post(scaler, as_json(future))
        assert status == 400 and "relay.started_at" in body["error"]
        # Pods that do not exist cannot fill the fleet (--max-relays 1 is taken already).
        for index in range(20):
            status, body = await post(scaler, as_json(report(f"ghost-{index}", udp=100)))
            assert status == 503 and "retry" in body["error"]
        await asyncio.sleep(1.0)  # several of the real relay's heartbeats
        assert await counted(3, 1)

        # A second real pod joins although --max-relays is reached: the watch knows it.
        second = await relay_pod("relay-b")
        more = await stack.enter_async_context(clients_of(second.udp))
        await more.allocate(2)
        await eventually(lambda: counted(5, 2), "the second pod counted", within=20)
        text = await _metrics(scaler)
        assert 'turnscale_reports_total{result="forbidden"} 1.0' in text
        assert 'turnscale_reports_total{result="unknown_pod"} 20.0' in text
        assert 'turnscale_reports_total{result="invalid"} 1.0' in text


async def _metrics(scaler: ScalerProcess) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{scaler.base}/metrics") as r:
        return await r.text()
