"""End to end with the real Prometheus: every panel shows data, every rule evaluates.

Two real scaler replicas (HTTP and gRPC on loopback, port 0) take the reports of a
fleet of real relays carrying real TURN allocations (the ``fleet_feeder`` fixture) and
KEDA's gRPC calls. The Debian ``prometheus`` scrapes them every second with
``honor_labels: true``, beside loopback stand-ins for kube-state-metrics and KEDA's
operator, and evaluates the generated rule files. The test then:

1. with both replicas up (every relay exported twice): the recording rules count
   each relay once;
2. stops one replica, and resolves each dashboard's variables the way Grafana does
   (label values of the variable's selector), substitutes them into every panel
   query and asks Prometheus for the last seconds: every query must return a
   finite value, every recorded series must exist with its level's labels, and
   each alert must be pending or firing for what the fleet does wrong.

Every wait polls with a deadline; nothing depends on how long a step takes.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import pytest

from scaler.scaling import ScalingPolicy
from scaler.server import ScalerServer
from tests.dashboards.expressions import (
    DASHBOARD_FILES,
    RULE_FILES,
    dashboard_expressions,
    load_dashboard,
    recorded_names,
    regex_of,
    substitute,
    variable_query,
    variables,
)
from tests.dashboards.fleet import (
    FleetFeeder,
    Prometheus,
    PrometheusError,
    external_exporters,
    keda_polling,
    prometheus_config,
    running_prometheus,
)
from tests.dashboards.relay_feeder import RelayFeeder
from tests.scaler.helpers import scaler_config
from tests.tools import require_tool
from tests.waiting import eventually

# Grafana's $__rate_interval for a 1 s scrape interval: four scrape intervals.
RATE_INTERVAL: Final = "4s"
WITHIN: Final = 40.0
# Relayed bytes/s per replica (--target-bandwidth-per-replica).
BANDWIDTH_TARGET: Final = 800
SCALER_PODS: Final = ("turnscale-scaler-0", "turnscale-scaler-1")
# What each dashboard's variables must offer for this fleet (at least).
EXPECTED_VALUES: Final = {
    "turn-fleet.json": {
        "namespace": {"stunner", "team-2"},
        "gateway": {"stunner-gateway", "edge-gateway"},
        "pod": {"relay-a", "relay-b", "relay-c", "relay-d", "relay-e"},
    },
    "turnscale-scaler.json": {
        "namespace": {"turnscale"},
        "gateway": {"stunner-gateway", "edge-gateway"},
        "pod": set(SCALER_PODS),
    },
}
# Recorded series for stunner-gateway, each relay counted once: relay-a..d carry
# 520 + 430 + 5 (draining) + 0 (stale) allocations; 950 count for scaling.
RECORDED_VALUES: Final = {
    "namespace_gateway:stunner_allocations_active:sum": 955,
    "namespace_gateway:stunner_relay_up:count": 4,
    "namespace_gateway:stunner_relay_up:sum": 3,
    "namespace_gateway:stunner_relay_draining:sum": 1,
    "namespace_gateway:stunner_scaler_allocations:max": 950,
    "namespace_gateway:stunner_scaler_desired_replicas:max": 10,
    "namespace_gateway:stunner_scaler_allocations_per_desired_replica:ratio": 95,
}
# Parts of the world that are fine, or not turnscale's: no alert may name them.
HEALTHY: Final = {"edge-gateway", "relay-a", "relay-b", "relay-e", "turnscale-scaler-0", "orders"}
# What the fleet does wrong, and the alert each must raise (pending or firing).
EXPECTED_ALERTS: Final = {
    "TurnscaleScalerDown": {"pod": "turnscale-scaler-1"},
    "TurnscaleRelayReportsStale": {"pod": "relay-d"},
    "TurnscaleFleetAtMaxReplicas": {"gateway": "stunner-gateway"},
    "TurnscaleFleetNearCapacity": {"gateway": "stunner-gateway"},
    "TurnscaleReportsRejected": {"result": "unsupported_media_type"},
    "TurnscaleKedaScalerErrors": {"scaledObject": "stunner-gateway"},
    "TurnscaleRelayDrainingTooLong": {"pod": "relay-c"},
    "TurnscaleFleetOverBandwidth": {"gateway": "stunner-gateway"},
}


@pytest.fixture
async def fleet_feeder() -> AsyncIterator[FleetFeeder]:
    """What makes the scalers carry a relay fleet: real relays (``python -m relay``)
    holding real TURN allocations (aioice clients) with traffic, a draining one (SIGTERM)
    and a stale one (SIGSTOP); see tests/dashboards/relay_feeder.py. The test only relies
    on :class:`FleetFeeder` (``ReportFeeder`` in fleet.py fakes the same fleet with reports).
    """
    feeder = RelayFeeder()
    try:
        yield feeder
    finally:
        await feeder.stop()


async def no_problems_left(
    check: Callable[[], Awaitable[list[str]]], what: str, within: float = WITHIN
) -> None:
    """Run ``check`` (the problems it still sees) until it sees none, within a deadline."""
    problems: list[str] = []

    async def none_left() -> bool:
        problems[:] = await check()
        return not problems

    await eventually(none_left, what, within, interval=1.0, explain=lambda: "\n  ".join(problems))


def has_finite_value(data: dict[str, Any]) -> bool:
    if data["resultType"] == "matrix":
        values = [value for series in data["result"] for _, value in series["values"]]
    elif data["resultType"] == "vector":
        values = [series["value"][1] for series in data["result"]]
    else:  # a scalar
        values = [data["result"][1]]
    return any(math.isfinite(float(value)) for value in values)


async def variable_values(prometheus: Prometheus, path: Path, start: float) -> dict[str, str]:
    """Each variable's values as Grafana asks for them, written as Grafana substitutes them."""
    values = {"__rate_interval": RATE_INTERVAL}
    for variable in variables(load_dashboard(path)):
        if variable["type"] != "query":
            continue
        selector, label = variable_query(variable)
        found = await prometheus.api(
            f"label/{label}/values",
            **{"match[]": substitute(selector, values), "start": start, "end": time.time()},
        )
        expected = EXPECTED_VALUES[path.name][variable["name"]]
        assert expected <= set(found), (path.name, variable["name"], found)
        values[variable["name"]] = regex_of(sorted(found))
    return values


async def panel_problems(prometheus: Prometheus, start: float) -> list[str]:
    problems = []
    now = time.time()
    for path in DASHBOARD_FILES:
        values = await variable_values(prometheus, path, start)
        for expression in dashboard_expressions(path):
            if expression.kind != "panel":
                continue
            query = substitute(expression.text, values)
            data = await prometheus.api("query_range", query=query, start=now - 10, end=now, step=1)
            if not has_finite_value(data):
                problems.append(f"{expression.origin}: no data for {query}")
    return problems


async def recording_problems(prometheus: Prometheus) -> list[str]:
    problems = []
    for name in sorted(recorded_names()):
        result = (await prometheus.api("query", query=name))["result"]
        if not result:
            problems.append(f"{name}: not recorded")
            continue
        level = set(name.split(":")[0].split("_"))
        for series in result:
            labels = set(series["metric"]) - {"__name__"}
            if labels != level:
                problems.append(f"{name}: labels {sorted(labels)}, not its level")
        wanted = RECORDED_VALUES.get(name)
        if wanted is not None:
            got = [
                float(series["value"][1])
                for series in result
                if series["metric"].get("gateway") == "stunner-gateway"
            ]
            if got != [wanted]:
                problems.append(f"{name}: {got} for stunner-gateway, not {wanted}")
    return problems


async def alert_problems(prometheus: Prometheus) -> list[str]:
    active = (await prometheus.api("alerts"))["alerts"]
    problems = []
    for name, labels in EXPECTED_ALERTS.items():
        matching = [
            alert
            for alert in active
            if alert["labels"]["alertname"] == name
            and labels.items() <= alert["labels"].items()
            and alert["state"] in ("pending", "firing")
        ]
        if not matching:
            problems.append(f"{name} {labels}: not active")
    for alert in active:
        # Nothing about the healthy parts of the fleet, or about another application.
        about = {alert["labels"].get(key) for key in ("gateway", "pod", "scaledObject")}
        if about & HEALTHY:
            problems.append(f"unexpected alert {alert['labels']}")
    return problems


async def test_dashboards_and_rules_against_a_real_prometheus(
    tmp_path: Path, fleet_feeder: FleetFeeder
) -> None:
    require_tool("prometheus")
    # A relay silent for 2 s is stale; none expires during the test. The relays' traffic
    # (measured: about 6.5 kB/s each) puts stunner-gateway, at its 10 replicas by
    # allocations, over BANDWIDTH_TARGET per replica (1.26 kB/s), and edge-gateway's one
    # relay asks for 8 replicas by bandwidth, under its 10.
    config = replace(
        scaler_config(),
        stale_after=2.0,
        expire_after=3600.0,
        policy=ScalingPolicy(target_bandwidth_per_replica=BANDWIDTH_TARGET),
        bandwidth_window=5.0,
    )
    async with AsyncExitStack() as stack:
        replicas = [ScalerServer(config), ScalerServer(config)]
        for server in replicas:
            await server.start()
            stack.push_async_callback(server.stop)
        await fleet_feeder.start([f"http://{server.http_address}" for server in replicas])
        await stack.enter_async_context(
            keda_polling(str(replicas[0].grpc_address), fleet_feeder.relays)
        )
        exporters = await stack.enter_async_context(external_exporters(fleet_feeder.relays))
        targets = [(str(s.http_address), pod) for s, pod in zip(replicas, SCALER_PODS, strict=True)]
        prometheus = await stack.enter_async_context(
            running_prometheus(tmp_path, prometheus_config(targets, exporters, RULE_FILES))
        )
        start = time.time() - 60

        async def both_replicas_counted_once() -> list[str]:
            raw = await prometheus.api(
                "query", query='count(stunner_relay_up{gateway="stunner-gateway"})'
            )
            if [series["value"][1] for series in raw["result"]] != ["8"]:
                return [f"stunner_relay_up not yet scraped from both replicas: {raw}"]
            return await recording_problems(prometheus)

        await no_problems_left(both_replicas_counted_once, "recording rules with two replicas")

        await replicas[1].stop()  # one scaler replica goes down

        async def everything() -> list[str]:
            try:
                return [
                    *await recording_problems(prometheus),
                    *await panel_problems(prometheus, start),
                    *await alert_problems(prometheus),
                ]
            except PrometheusError as error:  # a query Prometheus refuses: no use waiting
                pytest.fail(str(error))

        try:
            await no_problems_left(everything, "every panel, recorded series and alert")
        except AssertionError as error:
            raise AssertionError(f"{error}\nprometheus log:\n{prometheus.log_tail()}") from None
