"""Scale-in by deletion cost, through the real kubernetes-asyncio client against the fake
API server: patched only on scale-in, only changed values, rate-limited, never per report."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import generate_latest

from scaler.exposition import render
from scaler.keda.metadata import Trigger
from scaler.kube.integration import KubeIntegration
from scaler.kube.pods import POD_DELETION_COST
from scaler.scaling import ScalingPolicy
from scaler.server import ScalerServer
from tests.k8s_fake import STRATEGIC_MERGE_PATCH, FakeKubeApi
from tests.reports import as_json, report
from tests.scaler.conftest import StartKube
from tests.scaler.helpers import FakeClock, value
from tests.waiting import eventually

Started = Callable[..., Awaitable[tuple[KubeIntegration, ScalerServer]]]
RELAYS = ("relay-a", "relay-b", "relay-c", "relay-d")


@pytest.fixture
def started(fake: FakeKubeApi, start_kube: StartKube) -> Started:
    """``await started(interval)``: the integration planning every ``interval`` seconds,
    once it has listed the four relay pods."""
    for name in RELAYS:
        fake.add_pod(name)

    async def start(interval: float = 10.0) -> tuple[KubeIntegration, ScalerServer]:
        integration, scaler = await start_kube(deletion_cost_interval=interval)
        await eventually(lambda: len(integration.view) == len(RELAYS), "pods listed")
        await eventually(lambda: integration.leader.leading, "the exporter Lease taken")
        return integration, scaler

    return start


def push(scaler: ScalerServer, pod: str, seq: int = 1, **kwargs: Any) -> None:
    answer = scaler.service.submit_report(
        content_type="application/json",
        authorization=None,
        body=as_json(report(pod, seq=seq, **kwargs)),
        peer="127.0.0.1",
    )
    assert answer.status == 202


def costs(fake: FakeKubeApi) -> dict[str, str | None]:
    return {name: fake.annotations(name).get(POD_DELETION_COST) for name in RELAYS}


async def test_no_patch_while_the_fleet_is_not_scaling_in(
    fake: FakeKubeApi, started: Started
) -> None:
    integration, scaler = await started()
    for name, count in zip(RELAYS, (100, 100, 90, 80), strict=True):
        push(scaler, name, udp=count)  # 370 allocations want 4 replicas: 4 ready
    assert await integration.update_costs() == 0
    assert fake.requests.get("patch", 0) == 0
    assert integration.stats.scaling_in == {("stunner", "stunner-gateway"): False}


async def test_scale_in_sets_each_pods_cost_to_its_allocations_and_only_changes(
    fake: FakeKubeApi, started: Started, clock: FakeClock
) -> None:
    integration, scaler = await started()
    for name, count in zip(RELAYS, (70, 0, 25, 5), strict=True):
        push(scaler, name, udp=count)  # 100 allocations want 2 replicas: 4 ready
    assert await integration.update_costs() == 3  # relay-b has 0: absent already means 0
    assert costs(fake) == {"relay-a": "70", "relay-b": None, "relay-c": "25", "relay-d": "5"}
    assert {patch[2] for patch in fake.patches} == {STRATEGIC_MERGE_PATCH}
    assert fake.patches[0][3] == {"metadata": {"annotations": {POD_DELETION_COST: "70"}}}
    # The watch brings the new annotations back; nothing differs any more.
    watched = {"relay-a": 70, "relay-b": None, "relay-c": 25, "relay-d": 5}
    await eventually(
        lambda: {p.name: p.deletion_cost for p in integration.view} == watched,
        "annotations watched",
    )
    clock.now += 60.0
    assert await integration.update_costs() == 0
    # One relay's allocations change: only its pod is patched.
    push(scaler, "relay-c", seq=2, udp=3)
    assert await integration.update_costs() == 1
    assert fake.patches[-1][:2] == ("stunner", "relay-c")
    assert costs(fake)["relay-c"] == "3"
    assert integration.stats.patches == {"ok": 4}


async def test_patches_are_rate_limited_and_never_follow_each_report(
    fake: FakeKubeApi, started: Started, clock: FakeClock
) -> None:
    _, scaler = await started(interval=0.05)  # rounds every 50 ms
    for name in RELAYS:
        push(scaler, name, udp=1)
    # A relay whose allocations change with every report, 40 reports over ~0.4 s:
    for seq in range(2, 42):
        push(scaler, "relay-a", seq=seq, udp=seq)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    # The fake clock stands still, so no pod is patched twice within 50 ms of it.
    patched = [patch[1] for patch in fake.patches]
    assert sorted(patched) == sorted(RELAYS)
    clock.now += 1.0
    await eventually(lambda: len(fake.patches) == len(RELAYS) + 1, "next round")
    assert fake.patches[-1][1] == "relay-a"
    assert costs(fake)["relay-a"] == "41"


async def test_patch_failures_are_counted_and_retried_in_a_later_round(
    fake: FakeKubeApi, started: Started, clock: FakeClock
) -> None:
    integration, scaler = await started()
    for name, count in zip(RELAYS, (10, 20, 30, 40), strict=True):
        push(scaler, name, udp=count)
    fake.fail_next("patch", 500, count=4)
    assert await integration.update_costs() == 0
    assert integration.stats.patches == {"error": 4}
    assert integration.stats.api_errors["patch"] == 4
    assert await integration.update_costs() == 0  # within the interval: not yet
    clock.now += 10.0
    assert await integration.update_costs() == 4
    assert costs(fake) == {"relay-a": "10", "relay-b": "20", "relay-c": "30", "relay-d": "40"}


async def test_a_pod_deleted_before_its_patch_is_not_found_not_an_error(
    fake: FakeKubeApi, started: Started
) -> None:
    integration, scaler = await started()
    for name, count in zip(RELAYS, (10, 20, 30, 40), strict=True):
        push(scaler, name, udp=count)
    # Deleted in the API but the watch has not told the scaler yet.
    fake.watchers.clear()
    fake.pods.pop(("stunner", "relay-d"))
    assert await integration.update_costs() == 3
    assert integration.stats.patches == {"ok": 3, "not_found": 1}
    assert "patch" not in integration.stats.api_errors


async def test_no_costs_from_a_view_that_is_out_of_sync(
    fake: FakeKubeApi, started: Started
) -> None:
    integration, scaler = await started()
    for name in RELAYS:
        push(scaler, name, udp=1)
    await fake.stop()
    await eventually(lambda: not integration.stats.watch_up, "watch down")
    assert await integration.update_costs() == 0
    await fake.start()


async def test_deletion_cost_off(fake: FakeKubeApi, started: Started) -> None:
    integration, scaler = await started(interval=0.0)
    for name in RELAYS:
        push(scaler, name, udp=1)
    assert integration.planner is None
    assert await integration.update_costs() == 0
    assert fake.requests.get("patch", 0) == 0


async def test_scale_in_follows_the_policy_a_keda_trigger_asked_for_as_metrics_do(
    fake: FakeKubeApi, started: Started
) -> None:
    integration, scaler = await started()
    for name, count in zip(RELAYS, (100, 100, 90, 80), strict=True):
        push(scaler, name, udp=count)  # the flags: 370 allocations want 4 replicas, 4 ready
    assert await integration.update_costs() == 0
    # A trigger of this fleet carries 200 allocations a replica: 2 replicas, scaling in.
    scaler.policies.record(Trigger("stunner-gateway", "stunner", ScalingPolicy(1, 10, 200), 0))
    assert await integration.update_costs() == 4
    assert integration.stats.scaling_in == {("stunner", "stunner-gateway"): True}
    assert costs(fake) == {"relay-a": "100", "relay-b": "100", "relay-c": "90", "relay-d": "80"}
    text = render(scaler.registry, None)[0].decode()
    labels = {"namespace": "stunner", "gateway": "stunner-gateway"}
    assert value(text, "stunner_scaler_desired_replicas", **labels) == 2


async def test_a_follower_patches_nothing_and_exports_no_fleet(
    fake: FakeKubeApi, start_kube: StartKube
) -> None:
    for name in RELAYS:
        fake.add_pod(name)
    # Another replica holds the exporter Lease and keeps renewing it.
    renewed = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fake.apply(
        {
            "kind": "Lease",
            "metadata": {"name": "turnscale-scaler", "namespace": "stunner"},
            "spec": {
                "holderIdentity": "scaler-elsewhere",
                "leaseDurationSeconds": 3600,
                "acquireTime": renewed,
                "renewTime": renewed,
            },
        }
    )
    integration, scaler = await start_kube(deletion_cost_interval=10.0)
    await eventually(lambda: len(integration.view) == len(RELAYS), "pods listed")
    await eventually(lambda: fake.requests.get("get", 0) >= 2, "the Lease read twice")
    for name, count in zip(RELAYS, (70, 0, 25, 5), strict=True):
        push(scaler, name, udp=count)  # scaling in: the leader would patch 3 pods
    assert not integration.leader.leading
    assert await integration.update_costs() == 0
    assert fake.requests.get("patch", 0) == 0
    text = generate_latest(scaler.registry).decode()
    assert "turnscale_scaler_leader 0.0" in text
    assert "stunner_" not in text  # no per-relay family, no stunner_scaler_*
    assert "turnscale_relays_tracked 4.0" in text  # it still holds the whole fleet
    lease = fake.get("Lease", "turnscale-scaler")
    assert lease is not None and lease["spec"]["holderIdentity"] == "scaler-elsewhere"
