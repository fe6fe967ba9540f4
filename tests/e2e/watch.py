"""Watching a running scaler the way its three consumers do, all the time.

:class:`ScalerWatch` polls, in a loop, what Prometheus scrapes (``/metrics``), what KEDA's
metrics-api trigger reads (``/v1/scale``) and what KEDA's external scaler calls
(gRPC ``GetMetrics``) for one fleet, and keeps the latest :class:`Reading`. Tests wait on
it with tests/waiting.py ``eventually(lambda: watch.shows(...))``.

Along the way it checks what must hold at every instant, in every reading:

- no sample is negative;
- no relay counter carried by the reports' state (``stunner_connections_total``,
  ``stunner_bytes_*_total``) ever goes down, also across relay and scaler restarts;
- no counter built from events (``stunner_allocations_created_total``,
  ``stunner_allocations_deleted_total``, the duration histogram) goes down while one
  scaler process runs. Those live in the scaler's memory, so a restarted scaler starts them
  again (from the events it receives after the restart); Prometheus sees that as the
  counter reset of a restarted target, which ``rate()`` handles, and the readings key them
  by the scaler's ``process_start_time_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families

from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc

Labels = frozenset[tuple[str, str]]
Sample = tuple[str, Labels]

#: Carried by every report's state: never down, whatever restarts.
STATE_COUNTERS: Final = (
    "stunner_connections_total",
    "stunner_bytes_received_total",
    "stunner_bytes_sent_total",
)
#: Built from events in the scaler's memory: never down within one scaler process.
EVENT_COUNTERS: Final = (
    "stunner_allocations_created_total",
    "stunner_allocations_deleted_total",
    "stunner_allocation_duration_seconds_bucket",
    "stunner_allocation_duration_seconds_count",
    "stunner_allocation_duration_seconds_sum",
)
#: Pause between two polls.
POLL: Final = 0.005
#: gRPC reconnects fast after a scaler restart (the default backoff starts at 1 s).
CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
)


def parse(exposition: str) -> dict[Sample, float]:
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


@dataclass(frozen=True)
class Reading:
    """One poll: /v1/scale and GetMetrics for the watched fleet, and every /metrics sample."""

    scale: dict[str, Any]
    grpc: int
    metrics: dict[Sample, float]

    def total(self, name: str, **labels: str) -> float:
        """Sum of the ``name`` samples carrying ``labels`` (0 if there are none)."""
        wanted = labels.items()
        return sum(
            value
            for (sample, sample_labels), value in self.metrics.items()
            if sample == name and wanted <= dict(sample_labels).items()
        )

    def has(self, name: str, **labels: str) -> bool:
        wanted = labels.items()
        return any(
            sample == name and wanted <= dict(sample_labels).items()
            for sample, sample_labels in self.metrics
        )

    def allocations(self, **labels: str) -> float:
        return self.total("stunner_allocations_active", **labels)

    def counted(self) -> int:
        """Allocations counted for scaling, if /v1/scale and GetMetrics agree; else -1."""
        scale = int(self.scale["allocations"])
        return scale if scale == self.grpc else -1


@dataclass
class ScalerWatch:
    """Polls one scaler for one fleet (namespace, gateway) until closed."""

    http: str
    grpc_target: str
    namespace: str
    gateway: str
    latest: Reading | None = None
    readings: int = 0
    failures: int = 0
    negatives: list[str] = field(default_factory=list)
    decreases: list[str] = field(default_factory=list)
    _highest: dict[tuple[float, Sample], float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None
    _channel: grpc.aio.Channel | None = None

    def shows(self, counted: int | None = None, pods: Mapping[str, float] | None = None) -> bool:
        """The latest reading counts ``counted`` allocations for scaling (/v1/scale and
        GetMetrics alike) and exports each of ``pods`` with that many active allocations."""
        reading = self.latest
        if reading is None:
            return False
        if counted is not None and reading.counted() != counted:
            return False
        return all(
            reading.has("stunner_allocations_active", pod=pod)
            and reading.allocations(pod=pod) == value
            for pod, value in (pods or {}).items()
        )

    def check_sound(self) -> None:
        """Fail if any reading so far had a negative sample or a counter going down."""
        assert self.readings > 0, "the scaler was never read"
        assert not self.negatives, self.negatives[:5]
        assert not self.decreases, self.decreases[:5]

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._task = asyncio.create_task(self._run(), name="scaler-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()
        if self._session is not None:
            await self._session.close()

    async def read(self) -> Reading:
        """One reading, now."""
        assert self._session is not None
        base = f"http://{self.http}"
        query = {"namespace": self.namespace, "gateway": self.gateway}
        async with self._session.get(f"{base}/v1/scale", params=query) as answer:
            answer.raise_for_status()
            scale = await answer.json()
        value = await self._get_metrics()
        async with self._session.get(f"{base}/metrics") as answer:
            answer.raise_for_status()
            metrics = parse(await answer.text())
        return Reading(scale, value, metrics)

    async def _get_metrics(self) -> int:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.grpc_target, options=CHANNEL_OPTIONS)
        stub: Any = pb_grpc.ExternalScalerStub(self._channel)  # type: ignore[no-untyped-call]
        trigger = pb.ScaledObjectRef(
            name=self.gateway,
            namespace=self.namespace,
            scalerMetadata={
                "scalerAddress": self.grpc_target,
                "namespace": self.namespace,
                "gateway": self.gateway,
            },
        )
        spec = await stub.GetMetricSpec(trigger, timeout=5)
        request = pb.GetMetricsRequest(
            scaledObjectRef=trigger, metricName=spec.metricSpecs[0].metricName
        )
        answer = await stub.GetMetrics(request, timeout=5)
        (metric,) = answer.metricValues
        return int(metric.metricValue)

    async def _run(self) -> None:
        while True:
            try:
                reading = await self.read()
            except (aiohttp.ClientError, grpc.aio.AioRpcError, TimeoutError, OSError):
                self.latest = None  # a scaler down (or restarting) shows nothing
                self.failures += 1
                await asyncio.sleep(0.05)
                continue
            self._check(reading)
            self.latest = reading
            self.readings += 1
            await asyncio.sleep(POLL)

    def _check(self, reading: Reading) -> None:
        epoch = reading.metrics.get(("process_start_time_seconds", frozenset()), 0.0)
        for sample, value in reading.metrics.items():
            name, labels = sample
            if value < 0 or math.isnan(value):
                self.negatives.append(f"{name}{dict(labels)} = {value}")
            if name in STATE_COUNTERS:
                key = (0.0, sample)  # one series for the whole test, whatever restarts
            elif name in EVENT_COUNTERS:
                key = (epoch, sample)
            else:
                continue
            before = self._highest.get(key)
            if before is not None and value < before:
                self.decreases.append(f"{name}{dict(labels)}: {before} -> {value}")
            self._highest[key] = max(value, before or 0.0)


@contextlib.asynccontextmanager
async def watching(
    http: str, grpc_target: str, *, namespace: str, gateway: str
) -> AsyncIterator[ScalerWatch]:
    """Watch a scaler for the whole block; its soundness is checked at the end."""
    watch = ScalerWatch(http, grpc_target, namespace, gateway)
    await watch.start()
    try:
        yield watch
    finally:
        await watch.close()
