"""The relay pod watch, through the real kubernetes-asyncio client, against the fake API
server: deleted pods, stale-but-present pods, bookmarks, 410 Gone, dropped connections,
API errors and an API server that goes away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaler.exposition import render
from scaler.kube.integration import KubeIntegration
from scaler.server import ScalerServer
from tests.clock import FakeClock
from tests.k8s_fake import PODS, FakeKubeApi
from tests.reports import as_json, report
from tests.scaler.conftest import StartKube
from tests.scaler.helpers import value
from tests.waiting import eventually


def push(scaler: ScalerServer, pod: str, seq: int = 1, **kwargs: Any) -> int:
    answer = scaler.service.submit_report(
        content_type="application/json",
        authorization=None,
        body=as_json(report(pod, seq=seq, **kwargs)),
        peer="127.0.0.1",
    )
    return answer.status


def metric(scaler: ScalerServer, name: str, **labels: str) -> float | None:
    text = render(scaler.registry, None)[0].decode()
    return value(text, name, **labels)


async def synced(integration: KubeIntegration, pods: int) -> None:
    await eventually(
        lambda: integration.stats.watch_up and len(integration.view) == pods, "pods listed"
    )


async def watch_open(fake: FakeKubeApi) -> None:
    """Until the fake server holds an open pod watch: ``watch_up`` turns true at the list,
    before the watch request arrives, and a fault injected in between would hit nothing."""
    await eventually(
        lambda: any(watcher.resource == PODS for watcher in fake.watchers), "pod watch open"
    )


async def test_list_then_watch_follows_the_relay_pods(
    fake: FakeKubeApi, start_kube: StartKube
) -> None:
    fake.add_pod("relay-a")
    fake.add_pod("relay-b")
    fake.add_pod("web-1", labels={"app": "web"})  # not a relay
    fake.add_pod("relay-x", namespace="elsewhere")  # not in the relay namespace
    listed_at = str(fake.resource_version)
    integration, scaler = await start_kube()
    await synced(integration, 2)
    assert scaler.readiness["kubernetes"].ok is True
    fake.add_pod("relay-c")
    fake.update_pod("relay-a", ready=False)
    await eventually(lambda: len(integration.view) == 3, "relay-c seen")
    await eventually(lambda: not integration.view.get(("stunner", "relay-a")).ready, "not ready")  # type: ignore[union-attr]
    first = fake.watch_queries[0]
    assert first["labelSelector"] == "app=stunner"
    assert first["allowWatchBookmarks"] in ("true", "True")  # Go's ParseBool takes both
    assert first["resourceVersion"] == listed_at
    assert int(first["timeoutSeconds"]) == 2
    assert fake.requests["list"] == 1
    assert metric(scaler, "turnscale_kubernetes_watch_up") == 1
    assert metric(scaler, "turnscale_kubernetes_relay_pods") == 3


async def test_a_deleted_pod_leaves_the_fleet_at_once(
    fake: FakeKubeApi, start_kube: StartKube
) -> None:
    fake.add_pod("relay-a")
    fake.add_pod("relay-b")
    integration, scaler = await start_kube()
    await synced(integration, 2)
    assert push(scaler, "relay-a", udp=40) == 202
    assert push(scaler, "relay-b", udp=30) == 202
    generation = scaler.service.fleet.generation
    fake.delete_pod("relay-a")
    await eventually(lambda: scaler.service.fleet.get("stunner", "relay-a") is None, "relay-a gone")
    assert scaler.service.scale("stunner-gateway").allocations == 30
    assert scaler.service.fleet.generation > generation  # KEDA's StreamIsActive is woken
    assert metric(scaler, "turnscale_kubernetes_relays_removed_total") == 1
    # A pod that finished (evicted: phase Failed) is gone too, though its object stays.
    fake.update_pod("relay-b", phase="Failed")
    await eventually(lambda: scaler.service.fleet.get("stunner", "relay-b") is None, "relay-b gone")


async def test_a_silent_relay_whose_pod_exists_stays_stale_not_expired(
    fake: FakeKubeApi, start_kube: StartKube, clock: FakeClock
) -> None:
    fake.add_pod("relay-a")
    integration, scaler = await start_kube()
    await synced(integration, 1)
    push(scaler, "relay-a", udp=40)
    push(scaler, "relay-gone", udp=25)  # its pod is not in the API
    clock.now += 120.0  # twice --expire-after
    scaler.sweeper.sweep()
    assert scaler.service.fleet.get("stunner", "relay-gone") is None
    assert scaler.service.scale("stunner-gateway").allocations == 40
    labels = {"namespace": "stunner", "gateway": "stunner-gateway", "pod": "relay-a"}
    assert metric(scaler, "stunner_relay_up", **labels) == 0  # exported as stale
    assert metric(scaler, "stunner_allocations_active", **labels, transport="udp") == 40
    assert metric(scaler, "turnscale_kubernetes_relays_spared") == 1
    # Once the pod is being deleted, its silent relay is no longer spared.
    fake.update_pod("relay-a", deleting=True)
    await eventually(lambda: not integration.view.alive(), "pod terminating")
    scaler.sweeper.sweep()
    assert scaler.service.fleet.get("stunner", "relay-a") is None


async def test_bookmarks_move_the_resource_version_a_watch_resumes_from(
    fake: FakeKubeApi, start_kube: StartKube
) -> None:
    fake.add_pod("relay-a")
    integration, _ = await start_kube()
    await synced(integration, 1)
    fake.add_pod("unrelated", namespace="elsewhere")  # moves the version, not our event
    # Versions are global: the exporter Lease's renewals may move it further meanwhile.
    moved = fake.resource_version
    await eventually(
        lambda: int(integration.watcher.resource_version or 0) >= moved,  # type: ignore[union-attr]
        "bookmark",
    )
    # The server ends the watch after timeoutSeconds; the next one resumes, no list.
    await eventually(lambda: len(fake.watch_queries) >= 2, "second watch", within=6.0)
    assert int(fake.watch_queries[1]["resourceVersion"]) >= moved
    assert fake.requests["list"] == 1
    assert integration.stats.restarts.get("closed", 0) >= 1


async def test_a_dropped_watch_resumes_from_the_last_version_without_losing_events(
    fake: FakeKubeApi, start_kube: StartKube
) -> None:
    fake.add_pod("relay-a")
    integration, scaler = await start_kube()
    await synced(integration, 1)
    push(scaler, "relay-a", udp=10)
    await watch_open(fake)
    fake.drop_watches()
    fake.delete_pod("relay-a")  # happens while no watch is open
    fake.add_pod("relay-b")
    await eventually(
        lambda: scaler.service.fleet.get("stunner", "relay-a") is None, "replayed delete"
    )
    await eventually(lambda: integration.view.get(("stunner", "relay-b")) is not None, "add")
    assert integration.stats.restarts.get("dropped", 0) >= 1
    assert fake.requests["list"] == 1  # resumed, not relisted
    assert integration.stats.watch_up


async def test_410_gone_lists_again_and_finds_what_it_missed(
    fake: FakeKubeApi, start_kube: StartKube
) -> None:
    fake.add_pod("relay-a")
    fake.add_pod("relay-b")
    integration, scaler = await start_kube()
    await synced(integration, 2)
    push(scaler, "relay-a", udp=10)
    push(scaler, "relay-b", udp=20)
    # The watch cannot reconnect for a while; meanwhile a pod goes and history is compacted.
    fake.fail_next("watch", 503, count=1_000_000)
    fake.drop_watches()
    await eventually(lambda: fake.requests.get("watch", 0) >= 3, "watch retried")
    fake.delete_pod("relay-a")
    fake.compact()
    fake.faults.clear()
    await eventually(lambda: integration.stats.restarts.get("expired", 0) >= 1, "410 seen")
    await eventually(lambda: scaler.service.fleet.get("stunner", "relay-a") is None, "relisted")
    assert fake.requests["list"] == 2
    assert scaler.service.fleet.get("stunner", "relay-b") is not None
    await eventually(lambda: integration.stats.watch_up, "watching again")
    assert integration.stats.api_errors.get("watch", 0) >= 1  # the 503s


async def test_a_410_error_event_mid_stream_lists_again(
    fake: FakeKubeApi, start_kube: StartKube
) -> None:
    fake.add_pod("relay-a")
    integration, _ = await start_kube()
    await synced(integration, 1)
    await watch_open(fake)
    fake.expire_watches()
    await eventually(lambda: fake.requests.get("list", 0) == 2, "relisted")
    assert integration.stats.restarts["expired"] == 1
    await synced(integration, 1)


async def test_api_errors_back_off_and_never_make_the_scaler_unready(
    fake: FakeKubeApi, start_kube: StartKube
) -> None:
    fake.add_pod("relay-a")
    fake.fail_next("list", 500, count=3)
    integration, scaler = await start_kube()
    await synced(integration, 1)
    assert fake.requests["list"] == 4
    assert integration.stats.api_errors["list"] == 3
    assert metric(scaler, "turnscale_kubernetes_api_errors_total", operation="list") == 3


async def test_an_api_server_that_goes_away_shows_but_changes_nothing_else(
    fake: FakeKubeApi, start_kube: StartKube, clock: FakeClock
) -> None:
    fake.add_pod("relay-a")
    fake.add_pod("relay-b")
    integration, scaler = await start_kube()
    await synced(integration, 2)
    push(scaler, "relay-a", udp=40)
    clock.now += 50.0
    await fake.stop()  # at t+50
    await eventually(lambda: not integration.stats.watch_up, "watch down")
    await eventually(lambda: integration.stats.api_errors.get("watch", 0) >= 2, "retrying")
    # Ingest, scaling answers and readiness carry on.
    assert scaler.readiness["kubernetes"].ok is False
    assert scaler.readiness.ready
    assert push(scaler, "relay-b", udp=5) == 202
    assert scaler.service.scale("stunner-gateway").allocations == 45
    assert metric(scaler, "turnscale_kubernetes_watch_up") == 0
    assert "cannot connect" in (integration.watcher.last_error or "")  # type: ignore[union-attr]
    # The last pod list is trusted for --expire-after after the API went away: relay-a,
    # silent for 70 s, stays. Later, silent relays expire as without Kubernetes.
    clock.now += 20.0
    scaler.sweeper.sweep()
    assert scaler.service.fleet.get("stunner", "relay-a") is not None
    clock.now += 41.0
    scaler.sweeper.sweep()
    assert scaler.service.fleet.get("stunner", "relay-a") is None
    await fake.start()  # same port
    await eventually(lambda: integration.stats.watch_up, "watching again")
    assert scaler.readiness["kubernetes"].ok is True
    assert integration.spared() == {("stunner", "relay-a"), ("stunner", "relay-b")}


async def test_a_wrong_token_is_an_api_error_that_keeps_being_retried(
    fake: FakeKubeApi, start_kube: StartKube, tmp_path: Path
) -> None:
    integration, scaler = await start_kube()
    await synced(integration, 0)
    fake.token = "rotated"
    fake.drop_watches()
    await eventually(lambda: integration.stats.api_errors.get("watch", 0) >= 2, "401s")
    assert "401" in (integration.watcher.last_error or "")  # type: ignore[union-attr]
    assert not integration.stats.watch_up and scaler.readiness.ready
