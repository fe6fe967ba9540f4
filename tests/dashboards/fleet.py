"""The world around a scaler for the end-to-end test with a real Prometheus.

- A :class:`FleetFeeder` makes the scaler carry a relay fleet. The test uses
  :class:`tests.dashboards.relay_feeder.RelayFeeder`: real relays with real TURN
  allocations. :class:`ReportFeeder` here fakes the same fleet with
  ``POST /v1/reports`` built with ``tests/reports.py`` the way a relay's pusher sends
  them (full state, growing counters, allocation events, heartbeats, to every scaler
  replica), for when relays cannot run: either satisfies the protocol.
- :func:`keda_polling` calls the scaler's gRPC external scaler as KEDA's operator does.
- :func:`external_exporters` serves the series others export in a cluster
  (kube-state-metrics, KEDA's operator) with their real label sets.
- :func:`running_prometheus` runs the Debian ``prometheus`` binary on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
import grpc
import yaml  # type: ignore[import-untyped]
from aiohttp import web

from scaler import wire
from scaler.keda.metadata import METRIC_PREFIX
from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from tests.net import free_port
from tests.reports import as_json, report
from tests.tools import require_tool

# How often the feeder reports and KEDA polls: faster than the 1 s scrape interval.
TICK: Final = 0.2
JSON: Final = {"Content-Type": "application/json"}
REASONS: Final[tuple[wire.DeleteReason, ...]] = ("refresh_zero", "expired", "drained", "error")
# Allocation lifetimes in seconds, spread over the duration histogram's buckets.
DURATIONS: Final = (0.4, 3.0, 45.0, 400.0, 2500.0)


@dataclass(frozen=True, slots=True)
class Relay:
    """One relay of the fleet and the state it keeps reporting."""

    namespace: str
    gateway: str
    pod: str
    udp: int
    tcp: int = 0
    draining: bool = False
    # Reports once, then falls silent: the scaler sees it stale.
    silent: bool = False

    @property
    def allocations(self) -> int:
        return self.udp + self.tcp


class FleetFeeder(Protocol):
    """Something that makes scalers carry :attr:`relays` until stopped."""

    relays: tuple[Relay, ...]

    async def start(self, scalers: Sequence[str]) -> None:
        """Begin reporting to every scaler base URL (``http://host:port``)."""

    async def stop(self) -> None: ...


# The fleet the end-to-end test expects: stunner-gateway at 950 counted allocations
# (10 replicas, the maximum: 95 per replica), a draining and a stale relay; a second
# namespace with a small gateway.
FLEET: Final = (
    Relay("stunner", "stunner-gateway", "relay-a", udp=500, tcp=20),
    Relay("stunner", "stunner-gateway", "relay-b", udp=430),
    Relay("stunner", "stunner-gateway", "relay-c", udp=5, draining=True),
    Relay("stunner", "stunner-gateway", "relay-d", udp=0, silent=True),
    Relay("team-2", "edge-gateway", "relay-e", udp=3, tcp=1),
)


@dataclass
class ReportFeeder:
    """Reports as relay pushers send them, on a timer, to every scaler replica."""

    relays: tuple[Relay, ...] = FLEET
    # Reports refused with 415 per tick and scaler (a misconfigured client).
    junk_per_tick: int = 1
    statuses: dict[int, int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self, scalers: Sequence[str]) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        await self._tick(list(scalers), 1)  # every relay known before start returns
        self._task = asyncio.create_task(self._run(list(scalers)), name="report-feeder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self, scalers: list[str]) -> None:
        for seq in itertools.count(2):
            await asyncio.sleep(TICK)
            await self._tick(scalers, seq)

    def _report(self, relay: Relay, seq: int) -> bytes:
        now = time.time()
        transport: wire.Transport = "udp" if seq % 3 else "tcp"
        events: list[wire.Event] = [
            wire.AllocationCreated(at=now, allocation=f"{relay.pod}-{seq}", transport=transport),
            wire.AllocationDeleted(
                at=now,
                allocation=f"{relay.pod}-{seq - 1}",
                transport=transport,
                reason=REASONS[seq % len(REASONS)],
                duration=DURATIONS[seq % len(DURATIONS)],
                bytes_received=1200 * seq,
                bytes_sent=3400 * seq,
            ),
        ]
        return as_json(
            report(
                relay.pod,
                seq=seq,
                namespace=relay.namespace,
                gateway=relay.gateway,
                udp=relay.udp,
                tcp=relay.tcp,
                draining=relay.draining,
                connections={"udp": 7 * seq, "tcp": seq},
                received={"client": 90_000 * seq, "peer": 310_000 * seq},
                sent={"client": 300_000 * seq, "peer": 80_000 * seq},
                events=events,
            )
        )

    async def _tick(self, scalers: list[str], seq: int) -> None:
        assert self._session is not None
        bodies = [
            (self._report(relay, seq), JSON)
            for relay in self.relays
            if seq == 1 or not relay.silent
        ]
        bodies += [(b"not a report", {"Content-Type": "text/plain"})] * self.junk_per_tick
        for base in scalers:
            for body, headers in bodies:
                try:
                    async with self._session.post(
                        f"{base}/v1/reports", data=body, headers=headers
                    ) as answer:
                        self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
                except aiohttp.ClientError:
                    # A scaler replica that is down: pushers retry, the rest carry on.
                    self.statuses[0] = self.statuses.get(0, 0) + 1


def keda_metric(relay: Relay) -> str:
    """The metric KEDA names for a trigger with the relay's namespace and gateway."""
    return f"s0-{METRIC_PREFIX}-{relay.namespace}-{relay.gateway}"


def gateways(relays: Sequence[Relay]) -> dict[tuple[str, str], int]:
    """Allocations that count for scaling per (namespace, gateway)."""
    counted: dict[tuple[str, str], int] = {}
    for relay in relays:
        key = (relay.namespace, relay.gateway)
        counted[key] = counted.get(key, 0) + (0 if relay.draining else relay.allocations)
    return counted


@asynccontextmanager
async def keda_polling(target: str, relays: Sequence[Relay]) -> AsyncIterator[None]:
    """KEDA's operator: a StreamIsActive per trigger and GetMetricSpec/GetMetrics polls."""
    channel = grpc.aio.insecure_channel(target)
    stub: Any = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
    triggers = [
        pb.ScaledObjectRef(
            name=gateway,
            namespace=namespace,
            scalerMetadata={"scalerAddress": target, "gateway": gateway, "namespace": namespace},
        )
        for namespace, gateway in sorted(gateways(relays))
    ]
    streams = [stub.StreamIsActive(trigger) for trigger in triggers]

    async def poll() -> None:
        while True:
            for trigger in triggers:
                spec = await stub.GetMetricSpec(trigger)
                name = spec.metricSpecs[0].metricName
                await stub.GetMetrics(
                    pb.GetMetricsRequest(scaledObjectRef=trigger, metricName=name)
                )
                await stub.IsActive(trigger)
            await asyncio.sleep(TICK)

    task = asyncio.create_task(poll(), name="keda-poller")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for stream in streams:
            stream.cancel()
        await channel.close()


@dataclass
class ExternalExporters:
    """Loopback endpoints serving kube-state-metrics' and KEDA's series for the fleet."""

    port: int
    relays: tuple[Relay, ...]
    scrapes: int = 0

    def kube_state_metrics(self) -> str:
        lines = ["# TYPE kube_deployment_status_replicas gauge"]
        for (namespace, gateway), allocations in sorted(gateways(self.relays).items()):
            replicas = min(max(-(-allocations // 100), 2), 10)
            lines.append(
                f'kube_deployment_status_replicas{{namespace="{namespace}",'
                f'deployment="{gateway}"}} {replicas}'
            )
        return "\n".join(lines) + "\n"

    def keda_operator(self) -> str:
        """KEDA fails on the first gateway's trigger (and another app's) on every poll."""
        self.scrapes += 1
        objects = [
            (
                namespace,
                gateway,
                "externalScaler",
                f"s0-{METRIC_PREFIX}-{namespace}-{gateway}",
                allocations,
                self.scrapes if index == 0 else 0,
            )
            for index, ((namespace, gateway), allocations) in enumerate(
                gateways(self.relays).items()
            )
        ]
        # Another application's ScaledObject, which the turnscale panels and alerts leave out.
        objects.append(("shop", "orders", "rabbitMQScaler", "s0-rabbitmq-orders", 17, self.scrapes))
        lines = [
            "# TYPE keda_scaler_metrics_value gauge",
            "# TYPE keda_scaler_metrics_latency_seconds gauge",
            "# TYPE keda_scaler_detail_errors_total counter",
        ]
        for namespace, name, scaler, metric, value, errors in objects:
            labels = (
                f'namespace="{namespace}",scaledObject="{name}",scaler="{scaler}",'
                f'metric="{metric}",triggerIndex="0",type="scaledobject"'
            )
            lines += [
                f"keda_scaler_metrics_value{{{labels}}} {value}",
                f"keda_scaler_metrics_latency_seconds{{{labels}}} 0.0021",
                f"keda_scaler_detail_errors_total{{{labels}}} {errors}",
            ]
        return "\n".join(lines) + "\n"


@asynccontextmanager
async def external_exporters(relays: Sequence[Relay]) -> AsyncIterator[ExternalExporters]:
    exporters = ExternalExporters(free_port(), tuple(relays))

    async def kube(request: web.Request) -> web.Response:
        return web.Response(text=exporters.kube_state_metrics())

    async def keda(request: web.Request) -> web.Response:
        return web.Response(text=exporters.keda_operator())

    app = web.Application()
    app.router.add_get("/kube-state-metrics/metrics", kube)
    app.router.add_get("/keda/metrics", keda)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", exporters.port).start()
    try:
        yield exporters
    finally:
        await runner.cleanup()


def prometheus_config(
    scalers: Sequence[tuple[str, str]], exporters: ExternalExporters, rule_files: Sequence[Path]
) -> dict[str, Any]:
    """Scrape every second; the scaler with honor_labels, as its ServiceMonitor does.

    ``scalers`` are (address, pod) pairs: each target carries the scaler pod's
    namespace and pod labels, as Kubernetes service discovery would set them.
    """
    exporter = f"127.0.0.1:{exporters.port}"
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": "turnscale-scaler",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [address], "labels": {"namespace": "turnscale", "pod": pod}}
                    for address, pod in scalers
                ],
            },
            {
                "job_name": "kube-state-metrics",
                "honor_labels": True,
                "metrics_path": "/kube-state-metrics/metrics",
                "static_configs": [{"targets": [exporter]}],
            },
            {
                # Like KEDA's ServiceMonitor: KEDA's namespace label becomes exported_namespace.
                "job_name": "keda-operator",
                "metrics_path": "/keda/metrics",
                "static_configs": [
                    {"targets": [exporter], "labels": {"namespace": "keda", "pod": "keda-0"}}
                ],
            },
        ],
    }


@dataclass
class Prometheus:
    base: str
    log: Path
    session: aiohttp.ClientSession

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    async def api(self, path: str, **params: Any) -> Any:
        """``data`` of a Prometheus API answer; a query error raises with its message."""
        async with self.session.get(f"{self.base}/api/v1/{path}", params=params) as answer:
            body = await answer.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('error', body)}")
        return body["data"]


class PrometheusError(AssertionError):
    pass


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)


@asynccontextmanager
async def running_prometheus(directory: Path, config: dict[str, Any]) -> AsyncIterator[Prometheus]:
    """The real ``prometheus`` on 127.0.0.1, its TSDB in ``directory``; ready when yielded."""
    binary = require_tool("prometheus")
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    log = directory / "prometheus.log"
    port = free_port()
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    process = await asyncio.to_thread(_spawn, command, log)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    prometheus = Prometheus(f"http://127.0.0.1:{port}", log, session)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"prometheus exited {process.returncode}:\n{prometheus.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{prometheus.base}/-/ready") as answer:
                    if answer.status == 200:
                        break
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready in 30 s:\n{prometheus.log_tail()}")
            await asyncio.sleep(0.1)
        yield prometheus
    finally:
        await session.close()
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 10)
