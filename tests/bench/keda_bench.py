"""KEDA external scaler benchmark: GetMetrics latency under concurrent callers, and the
delay from a relay report to the StreamIsActive message it causes.

The scaler runs as ``turnscale scaler`` (uvloop) pinned to one core, holding a fleet of
RELAYS relays; the callers run here, on the other core, over one gRPC channel as KEDA
does. Figures are printed; nothing is asserted. Bounded: fixed-length phases on loopback.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import grpc
import uvloop

from scaler import wire
from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from tests.bench.common import (
    free_port,
    percentile,
    pin_self_to_client_core,
    start_scaler,
    stop,
    table,
)
from tests.reports import report

RELAYS = 200
GATEWAYS = ("bench-a", "bench-b")
TOGGLE_GATEWAY = "bench-toggle"
CALLERS = (1, 16, 64)
PHASE_SECONDS = 3.0
TOGGLES = 300
FANOUT_STREAMS = 100
JSON = {"Content-Type": "application/json"}


def trigger(gateway: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(
        name="relays",
        namespace="stunner",
        scalerMetadata={"scalerAddress": "bench:9090", "gateway": gateway},
    )


class Feeder:
    """Pushes reports as relays do, each pod with its own growing seq."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.url = f"{base}/v1/reports"
        self.seqs: dict[str, int] = {}

    async def push(self, pod: str, gateway: str, udp: int) -> None:
        seq = self.seqs[pod] = self.seqs.get(pod, 0) + 1
        body = wire.encode(report(pod, seq=seq, gateway=gateway, udp=udp))
        async with self.session.post(self.url, data=body, headers=JSON) as answer:
            if answer.status != 202:
                raise RuntimeError(f"report refused: {answer.status} {await answer.text()}")


async def get_metrics_latency(stub: Any, callers: int) -> tuple[int, float, float, int]:
    """calls/s, p50 s, p99 s and failures of GetMetrics with ``callers`` concurrent callers."""
    request = pb.GetMetricsRequest(
        scaledObjectRef=trigger(GATEWAYS[0]), metricName=f"s0-stunner-allocations-{GATEWAYS[0]}"
    )
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + PHASE_SECONDS

    async def caller() -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await stub.GetMetrics(request, timeout=10)
            except grpc.aio.AioRpcError:
                failures += 1
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    return (
        int(len(latencies) / elapsed),
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        failures,
    )


async def push_delay(stub: Any, feeder: Feeder, streams: int) -> tuple[float, float]:
    """p50/p99 s from sending a report that flips activity until ``streams`` streams saw it."""
    calls = [stub.StreamIsActive(trigger(TOGGLE_GATEWAY)) for _ in range(streams)]
    try:
        for call in calls:  # the state when the stream opens
            await asyncio.wait_for(call.read(), 10)
        delays: list[float] = []
        active = False
        for _ in range(TOGGLES):
            active = not active
            start = time.perf_counter()
            reads = asyncio.gather(*(asyncio.wait_for(call.read(), 10) for call in calls))
            await feeder.push("toggle-relay", TOGGLE_GATEWAY, 1 if active else 0)
            messages = await reads
            delays.append(time.perf_counter() - start)
            if any(message.result is not active for message in messages):
                raise RuntimeError("a stream reported the wrong state")
        return percentile(delays, 0.5), percentile(delays, 0.99)
    finally:
        for call in calls:
            call.cancel()


async def bench(http: str, grpc_target: str) -> None:
    async with aiohttp.ClientSession() as session:
        feeder = Feeder(session, http)
        for n in range(RELAYS):
            await feeder.push(f"relay-{n}", GATEWAYS[n % len(GATEWAYS)], udp=n % 50)
        await feeder.push("toggle-relay", TOGGLE_GATEWAY, 0)

        async with grpc.aio.insecure_channel(grpc_target) as channel:
            stub: Any = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
            await stub.GetMetricSpec(trigger(GATEWAYS[0]), timeout=10)  # warm up

            rows: list[list[object]] = [["callers", "calls/s", "p50 ms", "p99 ms", "failures"]]
            for callers in CALLERS:
                rate, p50, p99, failures = await get_metrics_latency(stub, callers)
                rows.append([callers, rate, f"{p50 * 1000:.2f}", f"{p99 * 1000:.2f}", failures])
            print(
                f"\n== KEDA GetMetrics ({RELAYS} relays tracked, scaler pinned to one core, "
                f"one channel, {PHASE_SECONDS:g} s per row)"
            )
            print(table(rows))

            delay_rows: list[list[object]] = [["open streams", "p50 ms", "p99 ms"]]
            for streams in (1, FANOUT_STREAMS):
                p50, p99 = await push_delay(stub, feeder, streams)
                delay_rows.append([streams, f"{p50 * 1000:.2f}", f"{p99 * 1000:.2f}"])
            print(
                f"\n== report -> StreamIsActive message ({TOGGLES} activity flips; "
                "time from sending the report until every open stream has the message)"
            )
            print(table(delay_rows))


def main() -> None:
    pin_self_to_client_core()
    http_port, grpc_port = free_port(), free_port()
    scaler = start_scaler(http_port, grpc_port)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(bench(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"))
    finally:
        stop(scaler)


if __name__ == "__main__":
    main()
