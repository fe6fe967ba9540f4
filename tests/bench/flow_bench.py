"""Event flow benchmark: from a TURN allocation to the scaler's answer, and to PromQL.

A relay (``python -m relay``, pushing reports) and a scaler (``python -m scaler``) run
pinned to core 0; the TURN client (aioice) and every poller run here, on core 1.

1. Push path. ALLOCATIONS allocations, one at a time, a pseudo-random pause of 0 to
   MAX_GAP ms between them (allocations arrive at any point of the relay's 50 ms batching
   window). For each, the clock starts when aioice's Allocate returns successfully; two
   pollers, each about every millisecond, ask ``GET /v1/scale`` (KEDA's metrics-api
   trigger) and gRPC ``GetMetrics`` (KEDA's external scaler) for the fleet's allocations,
   and the delay is the time until the first answer that includes the new allocation.
   Target: p99 under 100 ms for both. The relay batches the changes of 50 ms into one
   report (wire contract), so an allocation that follows a report closely waits for the
   rest of that window: the minimum shows the path without it.
2. Pull path, in the same run. A real Prometheus (Debian ``prometheus``, its TSDB in a
   temporary directory) scrapes the scaler every 15 s with ``honor_labels``, as the
   alternative design (KEDA's Prometheus trigger on ``sum(stunner_allocations_active)``)
   would. For STEPS steps of STEP_ALLOCATIONS allocations, each at a pseudo-random point
   of the scrape cycle: the time until ``/v1/scale``, ``GetMetrics`` and a PromQL query
   (polled every 100 ms) see the step's total, side by side. PromQL waits for the next
   scrape (0 to 15 s, 7.5 s on average); KEDA would then poll Prometheus on its own
   interval (30 s by default) on top, which is not counted here.

Figures are printed; nothing is asserted. Bounded: fixed counts, a deadline on every wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import grpc
import uvloop
from aioice.turn import TurnTransport, create_turn_endpoint

from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from tests.bench.common import (
    free_port,
    percentile,
    pin_self_to_client_core,
    python_argv,
    start_pinned,
    start_scaler,
    stop,
    table,
    wait_http,
)
from tests.relay.servers import free_port_pair

USER, PASSWORD = "bench", "bench-password"
NAMESPACE, GATEWAY = "bench", "bench-gateway"
ALLOCATIONS: Final = 250
MAX_GAP: Final = 0.06
POLL: Final = 0.001
TARGET_P99: Final = 0.1
STEPS: Final = 5
STEP_ALLOCATIONS: Final = 10
SCRAPE_SECONDS: Final = 15
SCRAPE_INTERVAL: Final = f"{SCRAPE_SECONDS}s"
PROMQL: Final = "sum(stunner_allocations_active)"
PROMQL_POLL: Final = 0.1
# Bounds on single waits: an answer on the push path, a step seen through Prometheus.
PUSH_TIMEOUT: Final = 10.0
PULL_TIMEOUT: Final = 60.0


def start_relay(udp_port: int, health_port: int, scaler: str) -> subprocess.Popen[bytes]:
    process = start_pinned(
        python_argv(
            "-m",
            "relay",
            *("--listen", f"udp://127.0.0.1:{udp_port}", "--health", f"127.0.0.1:{health_port}"),
            *("--user", f"{USER}:{PASSWORD}", "--realm", "bench.turnscale"),
            *("--scaler", scaler, "--pod", "bench-relay-0"),
            *("--namespace", NAMESPACE, "--gateway", GATEWAY),
            *("--log-level", "warning"),
        )
    )
    wait_http(f"http://127.0.0.1:{health_port}/ready")
    return process


@contextlib.contextmanager
def prometheus(scaler: str) -> Iterator[str | None]:
    """A real Prometheus scraping ``scaler`` every 15 s; its base URL (None if missing)."""
    binary = shutil.which("prometheus")
    if binary is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="flow-bench-prometheus-") as directory:
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "15s"},
            "scrape_configs": [
                {
                    "job_name": "turnscale-scaler",
                    "honor_labels": True,
                    "static_configs": [{"targets": [scaler]}],
                }
            ],
        }
        config_file = Path(directory) / "prometheus.yml"
        config_file.write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        log = (Path(directory) / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={Path(directory) / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(process)
            log.close()


class Fleet:
    """The views the scaler offers of the bench fleet: HTTP, gRPC and (maybe) PromQL."""

    def __init__(
        self, session: aiohttp.ClientSession, http: str, stub: Any, prom: str | None
    ) -> None:
        self.session = session
        self.scale_url = f"{http}/v1/scale"
        self.stub = stub
        self.prom = prom
        self.trigger = pb.ScaledObjectRef(
            name=GATEWAY,
            namespace=NAMESPACE,
            scalerMetadata={"scalerAddress": "bench", "namespace": NAMESPACE, "gateway": GATEWAY},
        )
        self.request: pb.GetMetricsRequest | None = None

    async def scale(self) -> int:
        params = {"namespace": NAMESPACE, "gateway": GATEWAY}
        async with self.session.get(self.scale_url, params=params) as answer:
            return int((await answer.json())["allocations"])

    async def get_metrics(self) -> int:
        if self.request is None:
            spec = await self.stub.GetMetricSpec(self.trigger, timeout=10)
            name = spec.metricSpecs[0].metricName
            self.request = pb.GetMetricsRequest(scaledObjectRef=self.trigger, metricName=name)
        answer = await self.stub.GetMetrics(self.request, timeout=10)
        return int(answer.metricValues[0].metricValue)

    async def promql(self) -> int:
        assert self.prom is not None
        url = f"{self.prom}/api/v1/query"
        async with self.session.get(url, params={"query": PROMQL}) as answer:
            result = (await answer.json())["data"]["result"]
        return int(float(result[0]["value"][1])) if result else -1


async def seen_after(
    started: float, read: Callable[[], Awaitable[int]], wanted: int, every: float, within: float
) -> float:
    """Seconds from ``started`` until ``read()`` first returns at least ``wanted``."""
    deadline = started + within
    while True:
        if await read() >= wanted:
            return time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not seen {wanted} within {within} s")
        await asyncio.sleep(every)


class Receiver(asyncio.DatagramProtocol):
    pass


async def allocate(relay: tuple[str, int]) -> TurnTransport:
    transport, _ = await asyncio.wait_for(
        create_turn_endpoint(Receiver, server_addr=relay, username=USER, password=PASSWORD),
        PUSH_TIMEOUT,
    )
    return transport


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


async def push_path(fleet: Fleet, relay: tuple[str, int], open_: list[TurnTransport]) -> None:
    rng = random.Random(20260905)
    http: list[float] = []
    grpc_: list[float] = []
    for _ in range(ALLOCATIONS):
        await asyncio.sleep(rng.uniform(0, MAX_GAP))
        open_.append(await allocate(relay))
        started = time.perf_counter()
        wanted = len(open_)
        by_http, by_grpc = await asyncio.gather(
            seen_after(started, fleet.scale, wanted, POLL, PUSH_TIMEOUT),
            seen_after(started, fleet.get_metrics, wanted, POLL, PUSH_TIMEOUT),
        )
        http.append(by_http)
        grpc_.append(by_grpc)
    rows: list[list[object]] = [
        ["answered by", "min ms", "p50 ms", "p99 ms", "max ms", "p99 < 100 ms"]
    ]
    for name, delays in (("/v1/scale (metrics-api)", http), ("GetMetrics (gRPC)", grpc_)):
        p99 = percentile(delays, 0.99)
        rows.append(
            [
                name,
                ms(min(delays)),
                ms(percentile(delays, 0.5)),
                ms(p99),
                ms(max(delays)),
                "yes" if p99 < TARGET_P99 else "NO",
            ]
        )
    print(
        f"\n== Allocate at the client -> the scaler counts it ({ALLOCATIONS} allocations, "
        "one at a time; relay and scaler pinned to core 0, client and pollers on core 1)"
    )
    print(table(rows))


async def pull_path(fleet: Fleet, relay: tuple[str, int], open_: list[TurnTransport]) -> None:
    if fleet.prom is None:
        print("\n== PromQL column skipped: Debian prometheus is not installed (make tools)")
        return
    # Prometheus has scraped the scaler once before the steps start.
    await seen_after(time.perf_counter(), fleet.promql, len(open_), PROMQL_POLL, PULL_TIMEOUT)
    rows: list[list[object]] = [
        ["step", "allocations", "/v1/scale ms", "GetMetrics ms", "PromQL (15 s scrape) s"]
    ]
    rng = random.Random(15)
    for step in range(1, STEPS + 1):
        # Each step lands at a random point of the scrape cycle (the last one just ended).
        await asyncio.sleep(rng.uniform(0, SCRAPE_SECONDS))
        for _ in range(STEP_ALLOCATIONS):
            open_.append(await allocate(relay))
        started = time.perf_counter()
        wanted = len(open_)
        by_http, by_grpc, by_promql = await asyncio.gather(
            seen_after(started, fleet.scale, wanted, POLL, PUSH_TIMEOUT),
            seen_after(started, fleet.get_metrics, wanted, POLL, PUSH_TIMEOUT),
            seen_after(started, fleet.promql, wanted, PROMQL_POLL, PULL_TIMEOUT),
        )
        rows.append([step, wanted, ms(by_http), ms(by_grpc), f"{by_promql:.1f}"])
    print(
        f"\n== The same allocations seen through Prometheus ({STEPS} steps of "
        f"{STEP_ALLOCATIONS} allocations; Prometheus scrapes the scaler every "
        f"{SCRAPE_INTERVAL}, PromQL {PROMQL!r} polled every {PROMQL_POLL * 1000:.0f} ms)"
    )
    print(table(rows))


async def bench(http: str, grpc_target: str, relay: tuple[str, int], prom: str | None) -> None:
    open_: list[TurnTransport] = []
    async with (
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(grpc_target) as channel,
    ):
        stub: Any = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        fleet = Fleet(session, http, stub, prom)
        try:
            await seen_after(time.perf_counter(), fleet.scale, 0, POLL, PUSH_TIMEOUT)
            await fleet.get_metrics()  # warm up the channel
            await push_path(fleet, relay, open_)
            await pull_path(fleet, relay, open_)
        finally:
            for transport in open_:
                transport.close()
            await asyncio.sleep(0.5)  # let the deletions leave


def main() -> None:
    pin_self_to_client_core()
    http_port, grpc_port = free_port(), free_port()
    udp_port, health_port = free_port_pair(), free_port()
    scaler = start_scaler(http_port, grpc_port)
    try:
        relay = start_relay(udp_port, health_port, f"http://127.0.0.1:{http_port}")
        try:
            with (
                prometheus(f"127.0.0.1:{http_port}") as prom,
                asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
            ):
                runner.run(
                    bench(
                        f"http://127.0.0.1:{http_port}",
                        f"127.0.0.1:{grpc_port}",
                        ("127.0.0.1", udp_port),
                        prom,
                    )
                )
        finally:
            stop(relay)
    finally:
        stop(scaler)


if __name__ == "__main__":
    main()
