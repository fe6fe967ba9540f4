"""Bandwidth moves the desired replicas end to end, where the allocations alone would not.

Real processes on loopback: ``python -m scaler`` with a small bandwidth target, a
``python -m relay`` pushing its reports to it, and ``turnscale load`` opening 5 real TURN
allocations (aioice) that send media-like traffic through the relay to a UDP echo peer.
5 allocations at 100 per replica ask for 1 replica (so the minimum, 2); the traffic asks
for more. The test reads the decision through KEDA's real gRPC contract (GetMetricSpec,
then GetMetrics per metric name, as KEDA's operator does) and through ``/v1/scale``, and
sees it fall back to the minimum once the traffic stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import grpc
import pytest

from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from tests.e2e.processes import pushing_relay, scaler_process
from tests.relay.servers import PASSWORD, USER
from tests.relay.turn_client import echo_peer
from tests.waiting import eventually

TURNSCALE: Final = str(Path(sys.executable).parent / "turnscale")
NAMESPACE: Final = "e2e-bw"
GATEWAY: Final = "e2e-bw-gateway"
FLEET: Final = {"namespace": NAMESPACE, "gateway": GATEWAY}
ALLOCATIONS: Final = 5
PPS: Final = 50
SIZE: Final = 1000
# Every payload crosses the relay twice (client to peer, echoed back): the relay receives
# (and sends) 2 x 5 x 50 x 1000 bytes of payload a second, TURN framing on top.
PAYLOAD_RATE: Final = 2 * ALLOCATIONS * PPS * SIZE
TARGET: Final = "100kB"  # 100,000 relayed bytes/s per replica: 5 replicas' worth of traffic
TARGET_BYTES: Final = 100_000
WINDOW: Final = "3s"
LOAD_SECONDS: Final = 12


async def scale(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/v1/scale", params=FLEET) as answer:
        assert answer.status == 200
        body: dict[str, Any] = await answer.json()
        return body


async def keda_view(stub: Any) -> dict[str, tuple[int, int]]:
    """``{metric name: (value, target)}`` as KEDA's operator reads them."""
    trigger = pb.ScaledObjectRef(
        name="relays", namespace=NAMESPACE, scalerMetadata={"scalerAddress": "x", **FLEET}
    )
    spec: pb.GetMetricSpecResponse = await stub.GetMetricSpec(trigger)
    view = {}
    for item in spec.metricSpecs:
        request = pb.GetMetricsRequest(scaledObjectRef=trigger, metricName=f"s0-{item.metricName}")
        answer: pb.GetMetricsResponse = await stub.GetMetrics(request)
        (metric,) = answer.metricValues
        view[metric.metricName] = (metric.metricValue, item.targetSize)
    return view


@contextlib.asynccontextmanager
async def load(relay: tuple[str, int], peer: tuple[str, int]) -> AsyncIterator[Any]:
    """``turnscale load`` as a user runs it; killed on the way out if still running."""
    process = await asyncio.create_subprocess_exec(
        TURNSCALE,
        "load",
        *("--relay", f"udp://{relay[0]}:{relay[1]}", "--user", f"{USER}:{PASSWORD}"),
        *("--allocations", str(ALLOCATIONS), "--ramp", "0.5s"),
        *("--duration", f"{LOAD_SECONDS}s", "--peer", f"{peer[0]}:{peer[1]}"),
        *("--pps", str(PPS), "--size", str(SIZE)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def peer() -> AsyncIterator[tuple[str, int]]:
    async with echo_peer() as (where, _):
        yield where


async def test_traffic_scales_the_fleet_beyond_what_its_allocations_ask_for(
    peer: tuple[str, int],
) -> None:
    flags = ("--target-bandwidth-per-replica", TARGET, "--bandwidth-window", WINDOW)
    with (
        scaler_process(*flags) as scaler,
        pushing_relay(scaler.base, "relay-bw", **FLEET) as relay,
    ):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            grpc.aio.insecure_channel(scaler.grpc) as channel,
        ):
            stub: Any = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
            await eventually(
                lambda: _shows(session, scaler.base, relays=1), "the relay reported", 10.0
            )
            async with load(relay.udp, peer) as running:
                seen: list[dict[str, Any]] = []

                async def scaled_by_traffic() -> bool:
                    answer = await scale(session, scaler.base)
                    seen.append(answer)
                    # A whole window of traffic: its average has reached the payload rate.
                    return bool(
                        answer["allocations"] == ALLOCATIONS
                        and answer["bandwidth"] >= 0.85 * PAYLOAD_RATE
                    )

                await eventually(
                    scaled_by_traffic,
                    "desired replicas moved by bandwidth",
                    within=LOAD_SECONDS - 2,
                    interval=0.2,
                    explain=lambda: json.dumps(seen[-1:]),
                )
                answer = seen[-1]
                # The allocations alone ask for 1 replica: the minimum, 2, would run.
                assert answer["proposals"]["allocations"] == 1
                assert answer["decidedBy"] == "bandwidth"
                assert answer["desiredReplicas"] == answer["proposals"]["bandwidth"] > 2
                # Relayed bytes/s: the payload rate plus TURN framing (4 bytes a ChannelData).
                assert answer["bandwidth"] <= 1.15 * PAYLOAD_RATE

                view = await keda_view(stub)
                allocations = f"stunner-allocations-{NAMESPACE}-{GATEWAY}"
                bandwidth = f"stunner-bandwidth-{NAMESPACE}-{GATEWAY}"
                assert set(view) == {allocations, bandwidth}
                assert view[allocations] == (ALLOCATIONS, 100)
                value, target = view[bandwidth]
                assert target == TARGET_BYTES
                # What KEDA's HPA computes from these: the larger proposal, by traffic.
                assert math.ceil(ALLOCATIONS / 100) == 1
                assert math.ceil(value / target) > 2
                assert 0.85 * PAYLOAD_RATE <= value <= 1.15 * PAYLOAD_RATE

                assert await asyncio.wait_for(running.wait(), LOAD_SECONDS + 10) == 0

            # Traffic and allocations gone: back to the minimum within the window.
            async def back_to_minimum() -> bool:
                answer = await scale(session, scaler.base)
                seen.append(answer)
                return (answer["allocations"], answer["bandwidth"], answer["desiredReplicas"]) == (
                    0,
                    0,
                    2,
                )

            await eventually(
                back_to_minimum,
                "back to 2 replicas",
                within=10.0,
                interval=0.2,
                explain=lambda: json.dumps(seen[-1:]),
            )
            view = await keda_view(stub)
            assert {name: number for name, (number, _) in view.items()} == {
                f"stunner-allocations-{NAMESPACE}-{GATEWAY}": 0,
                f"stunner-bandwidth-{NAMESPACE}-{GATEWAY}": 0,
            }


async def _shows(session: aiohttp.ClientSession, base: str, *, relays: int) -> bool:
    return bool((await scale(session, base))["relays"] == relays)
