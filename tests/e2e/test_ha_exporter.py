"""Two scaler replicas, one exporter: the platform's ``sum(stunner_allocations_active)`` on a
real Prometheus is exact through a partition of the leader and a SIGKILL.

Real processes throughout: two ``python -m scaler --kubernetes`` against the fake API
server (scaler A through a TCP path the test can cut), three ``python -m relay`` pushing to
both, aioice allocations through each relay, and the real ``prometheus`` scraping both
scalers every second with ``honor_labels: true`` as the shipped PodMonitor does. A sampler
asks Prometheus every 0.25 s; no sample may exceed the fleet's allocations or see two
exporters.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import yaml  # type: ignore[import-untyped]

from tests.dashboards.fleet import Prometheus, running_prometheus
from tests.e2e.clients import clients_of
from tests.e2e.processes import ScalerProcess, pushing_relay
from tests.k8s_fake import FakeKubeApi
from tests.net import CuttableProxy
from tests.relay.servers import RelayProcess
from tests.tools import require_tool

NAMESPACE: Final = "stunner"
GATEWAY: Final = "stunner-gateway"
FLEET: Final = {"relay-a": 6, "relay-b": 4, "relay-c": 2}
TRUTH: Final = sum(FLEET.values())
LEASE_DURATION: Final = 3.0
RENEW_DEADLINE: Final = 2.0
SCRAPE: Final = 1.0
# Process scheduling and Prometheus's own evaluation on a loaded 2-core machine.
ALLOWANCE: Final = 2.0
SUM: Final = "sum(stunner_allocations_active)"
EXPORTERS: Final = "sum(turnscale_scaler_leader)"


@dataclass
class Samples:
    """What Prometheus answered, sampled all along."""

    sums: list[tuple[float, float | None]] = field(default_factory=list)
    exporters: list[tuple[float, float | None]] = field(default_factory=list)

    def latest_sum(self) -> float | None:
        return self.sums[-1][1] if self.sums else None

    def highest(self) -> float:
        return max((value for _, value in self.sums if value is not None), default=0.0)

    def most_exporters(self) -> float:
        return max((value for _, value in self.exporters if value is not None), default=0.0)


async def instant(prometheus: Prometheus, query: str) -> float | None:
    data = await prometheus.api("query", query=query)
    result = data["result"]
    return float(result[0]["value"][1]) if result else None


@contextlib.asynccontextmanager
async def sampling(prometheus: Prometheus) -> AsyncIterator[Samples]:
    samples = Samples()

    async def run() -> None:
        while True:
            now = time.monotonic()
            samples.sums.append((now, await instant(prometheus, SUM)))
            samples.exporters.append((now, await instant(prometheus, EXPORTERS)))
            await asyncio.sleep(0.25)

    task = asyncio.ensure_future(run())
    try:
        yield samples
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Seconds until ``check()`` holds, polled every 0.1 s; fail naming ``what``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def leads(scaler: ScalerProcess) -> bool:
    """Whether ``scaler``'s own /metrics says it is the exporter."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"{scaler.base}/metrics") as answer,
        ):
            text = await answer.text()
    except (aiohttp.ClientError, TimeoutError):
        return False
    return "turnscale_scaler_leader 1.0" in text


def scaler_flags(kubeconfig: Path) -> tuple[str, ...]:
    return (
        *("--kubernetes", "--kubeconfig", str(kubeconfig), "--relay-namespace", NAMESPACE),
        *("--lease-duration", f"{LEASE_DURATION:g}s", "--renew-deadline", f"{RENEW_DEADLINE:g}s"),
    )


ROOT: Final = Path(__file__).resolve().parents[2]
RULES: Final = ROOT / "dashboards" / "rules"
PODMONITOR: Final = ROOT / "deploy" / "components" / "monitoring" / "podmonitor.yaml"


def shipped_honor_labels() -> bool:
    """The shipped PodMonitor's honorLabels (the scrape interval is shortened here)."""
    monitor = yaml.safe_load(PODMONITOR.read_text(encoding="utf-8"))
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    return bool(endpoint["honorLabels"])


RECORDED: Final = "sum(namespace_gateway:stunner_allocations_active:sum)"


def prometheus_config(scalers: list[ScalerProcess]) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": f"{SCRAPE:g}s",
            "scrape_timeout": "1s",
            "evaluation_interval": f"{SCRAPE:g}s",
        },
        # The shipped rules: the dashboards read these recorded series.
        "rule_files": [str(RULES / "turnscale-recording.yaml")],
        "scrape_configs": [
            {
                "job_name": "turnscale-scaler",
                "honor_labels": shipped_honor_labels(),
                "static_configs": [
                    {"targets": [scaler.http], "labels": {"namespace": NAMESPACE, "pod": name}}
                    for scaler, name in zip(scalers, ("scaler-a", "scaler-b"), strict=True)
                ],
            }
        ],
    }


async def test_the_prometheus_sum_counts_each_relay_once_through_failovers(
    tmp_path: Path,
) -> None:
    require_tool("prometheus")
    api = FakeKubeApi()
    await api.start()
    proxy = CuttableProxy(("127.0.0.1", api.port))
    await proxy.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(api.stop)
        stack.push_async_callback(proxy.stop)
        for pod in FLEET:
            api.add_pod(pod, namespace=NAMESPACE, ip="127.0.0.1")
        # Scaler A reaches the API through the proxy, so the test can partition it alone.
        behind_proxy = api.kubeconfig(tmp_path, server=proxy.url)
        a = await asyncio.to_thread(ScalerProcess, *scaler_flags(behind_proxy))
        stack.callback(a.stop)
        await until(lambda: leads(a), 15, "scaler A leads")
        b = await asyncio.to_thread(ScalerProcess, *scaler_flags(api.kubeconfig(tmp_path)))
        stack.callback(b.stop)
        relays: list[RelayProcess] = []
        for pod in FLEET:
            relay = await asyncio.to_thread(
                stack.enter_context,
                pushing_relay([a.base, b.base], pod, namespace=NAMESPACE, gateway=GATEWAY),
            )
            relays.append(relay)
        for relay, count in zip(relays, FLEET.values(), strict=True):
            clients = await stack.enter_async_context(clients_of(relay.udp))
            await clients.allocate(count)
        (tmp_path / "prometheus").mkdir()
        prometheus = await stack.enter_async_context(
            running_prometheus(tmp_path / "prometheus", prometheus_config([a, b]))
        )
        samples = await stack.enter_async_context(sampling(prometheus))

        async def exact() -> bool:
            return samples.latest_sum() == TRUTH

        await until(exact, 20, "Prometheus sees the fleet")
        await asyncio.sleep(3 * SCRAPE)
        assert await leads(a) and not await leads(b)

        # The leader's path to the API breaks: it stops exporting, B takes over.
        proxy.cut()
        await until(lambda: _not(leads(a)), RENEW_DEADLINE + ALLOWANCE, "A stops exporting")
        took = await until(
            lambda: leads(b), LEASE_DURATION + 2 * SCRAPE + ALLOWANCE, "B takes over"
        )
        await until(exact, 2 * SCRAPE + ALLOWANCE, "the sum is whole again (B)")
        proxy.restore()
        await asyncio.sleep(3 * SCRAPE)
        assert not await leads(a), "A came back as a follower: B still holds the Lease"

        # The leader dies without a word: A takes over within the lease duration.
        killed = time.monotonic()
        b.kill()
        await until(lambda: leads(a), LEASE_DURATION + 2 * SCRAPE + ALLOWANCE, "A takes over")
        await until(exact, 2 * SCRAPE + ALLOWANCE, "the sum is whole again (A)")
        back = time.monotonic() - killed

        async def recorded_exact() -> bool:
            return await instant(prometheus, RECORDED) == TRUTH

        # The recording rules the dashboards use agree with the plain sum again.
        await until(recorded_exact, 4 * SCRAPE + ALLOWANCE, "the recorded fleet total")
        await asyncio.sleep(2 * SCRAPE)

    assert samples.highest() == TRUTH, f"a scrape saw more than the fleet: {samples.highest()}"
    assert samples.most_exporters() == 1, "a scrape saw two exporters"
    print(f"partition: B exported after {took:.1f} s; kill: A exported after {back:.1f} s")
    assert back <= LEASE_DURATION + 2 * SCRAPE + 2 * ALLOWANCE


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


pytestmark = pytest.mark.timeout(180)
