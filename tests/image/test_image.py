"""The container image, built from the Dockerfile and run the way ``deploy/base`` runs the
pods: read-only root filesystem with a tmpfs ``/tmp``, the manifests' user and group,
every capability dropped, no new privileges, the manifests' ``TURNSCALE_*`` variables
(downward-API values given literally) and the mounted Secrets as files. The shape comes
from the rendered manifests, so a change to one is caught in the other.

What differs from a cluster, and only that, is overridden: listen addresses (loopback
ports of the host network), the scaler's Kubernetes API (the fake API server through a
mounted kubeconfig, with the relay pod at 127.0.0.1) and the relay's peers (an echo peer
on loopback). Containers are removed by name afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import grpc
import pytest

from relay.core.auth import rest_credentials
from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from tests.browser import chromium
from tests.browser.tester import open_tester, verdicts
from tests.deploy.kustomize import build as render
from tests.deploy.manifests import BASE, one
from tests.e2e.clients import Clients
from tests.image import podman
from tests.k8s_fake import FakeKubeApi
from tests.net import free_port
from tests.relay.turn_client import echo_peer
from tests.tools import require_tool
from tests.waiting import eventually

NAMESPACE: Final = "stunner"
GATEWAY: Final = "stunner-gateway"
RELAY_POD: Final = "stunner-gateway-7c9f-abcde"
SECRETS: Final = {
    "report-token": "report-token-for-the-image-test",
    "auth-secrets": "rest-secret-1",
}
FIELDS: Final = {
    "metadata.name": RELAY_POD,
    "metadata.namespace": NAMESPACE,
    "metadata.labels['turnscale.io/gateway']": GATEWAY,
    "status.podIP": "127.0.0.1",
}
READY_WITHIN: Final = 30.0


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    for tool in ("podman", "runc", "debootstrap"):
        require_tool(tool)
    took = podman.build()
    print(f"\nimage {podman.IMAGE}: built in {took:.1f} s, {podman.image_size() / 1e6:.0f} MB")
    try:
        yield podman.IMAGE
    finally:
        podman.remove_images(podman.IMAGE, podman.BASE_IMAGE)


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render(BASE)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def logs(name: str) -> str:
    result = subprocess.run(
        podman.podman("logs", name), capture_output=True, text=True, check=False
    )
    return result.stdout + result.stderr


def test_every_command_the_readme_lists_runs_from_the_image(image: str) -> None:
    base = podman.podman("run", "--rm", *podman.ULIMITS, "--read-only", "--cap-drop", "ALL")
    for command in ([], ["scaler"], ["relay"], ["run"], ["load"], ["auth"]):
        result = subprocess.run(
            [*base, image, *command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (command, result.stderr[-2000:])
        assert "usage: turnscale" in result.stdout, command


@contextlib.asynccontextmanager
async def containers(*names: str) -> AsyncIterator[None]:
    podman.remove(*names)
    try:
        yield
    finally:
        await asyncio.to_thread(podman.remove, *names)


async def start(argv: list[str]) -> None:
    result = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


async def test_scaler_and_relay_containers_serve_keda_and_a_real_turn_client(
    image: str, manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    scaler_name, relay_name = "turnscale-test-scaler", "turnscale-test-relay"
    api = FakeKubeApi()
    await api.start()
    api.add_pod(RELAY_POD, namespace=NAMESPACE, ip="127.0.0.1", labels={"app": "stunner"})
    kube_dir = tmp_path / "kube"
    kube_dir.mkdir()
    kubeconfig = api.kubeconfig(kube_dir)
    kube_dir.chmod(0o755)
    kubeconfig.chmod(0o644)
    http, grpc_port = free_port(), free_port()
    async with containers(scaler_name, relay_name), echo_peer() as (peer, _):
        try:
            # The scaler, as its Deployment runs it.
            scaler = podman.pod_shape(one(manifests, "Deployment", "turnscale-scaler"), FIELDS)
            started = time.monotonic()
            await start(
                podman.run_args(
                    scaler,
                    scaler_name,
                    secrets=SECRETS,
                    directory=tmp_path,
                    env={
                        "TURNSCALE_HTTP": f"127.0.0.1:{http}",
                        "TURNSCALE_GRPC": f"127.0.0.1:{grpc_port}",
                        "TURNSCALE_KUBECONFIG": "/etc/turnscale/kube/kubeconfig",
                    },
                    mounts={"/etc/turnscale/kube": kube_dir},
                    tag=image,
                )
            )
            base = f"http://127.0.0.1:{http}"
            await eventually(
                lambda: asyncio.to_thread(lambda: http_get(f"{base}/readyz")[0] == 200),
                "the scaler container ready",
                within=READY_WITHIN,
            )
            scaler_ready = time.monotonic() - started
            assert http_get(f"{base}/healthz")[0] == 200
            status, text = http_get(f"{base}/metrics")
            assert status == 200 and "turnscale_scaler_leader" in text

            # A relay, as its Deployment runs it, pushing to the scaler with the token file.
            relay = podman.pod_shape(one(manifests, "Deployment", GATEWAY), FIELDS)
            turn, health = free_port(), free_port()
            started = time.monotonic()
            await start(
                podman.run_args(
                    relay,
                    relay_name,
                    secrets=SECRETS,
                    directory=tmp_path,
                    env={
                        "TURNSCALE_LISTEN": f"udp://127.0.0.1:{turn},tcp://127.0.0.1:{turn}",
                        "TURNSCALE_HEALTH": f"127.0.0.1:{health}",
                        "TURNSCALE_SCALER": base,
                        "TURNSCALE_ALLOW_LOOPBACK_PEERS": "true",
                        "TURNSCALE_DRAIN_TIMEOUT": "20s",
                    },
                    tag=image,
                )
            )
            await eventually(
                lambda: asyncio.to_thread(
                    lambda: http_get(f"http://127.0.0.1:{health}/ready")[0] == 200
                ),
                "the relay container ready",
                within=READY_WITHIN,
            )
            relay_ready = time.monotonic() - started

            # A real TURN client from the host, with REST credentials from the mounted secret.
            username, password = rest_credentials(
                SECRETS["auth-secrets"], "alice", time.time(), 600
            )
            clients = Clients(("127.0.0.1", turn), username=username, password=password)
            await clients.allocate(1)
            await clients.echo(peer, rounds=3)

            def scale() -> dict[str, Any]:
                result: dict[str, Any] = json.loads(
                    http_get(f"{base}/v1/scale?gateway={GATEWAY}")[1]
                )
                return result

            await eventually(
                lambda: asyncio.to_thread(lambda: scale()["allocations"] == 1),
                "the allocation counted by the scaler",
            )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
                ref = pb.ScaledObjectRef(
                    name=GATEWAY, namespace=NAMESPACE, scalerMetadata={"gateway": GATEWAY}
                )
                spec = await stub.GetMetricSpec(ref, timeout=10)
                metrics = await stub.GetMetrics(
                    pb.GetMetricsRequest(
                        scaledObjectRef=ref, metricName=spec.metricSpecs[0].metricName
                    ),
                    timeout=10,
                )
                assert metrics.metricValues[0].metricValue == 1

            # turnscale load from the image opens allocations against the relay container.
            load = await asyncio.to_thread(
                subprocess.run,
                [
                    *podman.podman("run", "--rm", *podman.ULIMITS, "--network", "host"),
                    *("--read-only", "--cap-drop", "ALL", "--user", relay.user),
                    image,
                    *("load", "--relay", f"udp://127.0.0.1:{turn}"),
                    *("--auth-secret", SECRETS["auth-secrets"], "--allocations", "3"),
                    *("--ramp", "0s", "--duration", "2s", "--peer", f"{peer[0]}:{peer[1]}"),
                    *("--pps", "5"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert load.returncode == 0, load.stderr[-2000:]

            # podman stop is SIGTERM: the relay drains its call, which ends, then exits.
            stopping = asyncio.ensure_future(
                asyncio.to_thread(
                    subprocess.run,
                    podman.podman("stop", "--time", "30", relay_name),
                    capture_output=True,
                    check=False,
                )
            )
            await eventually(
                lambda: asyncio.to_thread(
                    lambda: scale()["relays"] == 0 or "draining" in logs(relay_name)
                ),
                "the relay drains",
                within=10,
            )
            await clients.echo(peer, rounds=1)  # the call still flows while draining
            await clients.close()
            await asyncio.wait_for(stopping, 40)
            assert '"outcome": "drained"' in logs(relay_name)
            print(f"\nstart-up to ready: scaler {scaler_ready:.1f} s, relay {relay_ready:.1f} s")
        except BaseException:
            print("scaler log:\n" + logs(scaler_name)[-3000:])
            print("relay log:\n" + logs(relay_name)[-3000:])
            raise
        finally:
            await api.stop()


async def test_the_ice_tester_served_from_the_image_connects_a_browser_through_its_relay(
    image: str,
) -> None:
    """``turnscale run`` from the image, as locked down as the pods (read-only root, no
    capabilities, a non-root user): its tester page (package data in the wheel) loads in
    Chromium and places relay-only calls over UDP and TCP through the container's relay."""
    name = "turnscale-test-run"
    ports = {flag: free_port() for flag in ("--http", "--grpc", "--turn", "--health", "--peer")}
    auth = free_port()
    argv = [
        *podman.podman("run", "--detach", "--name", name, *podman.ULIMITS, "--network", "host"),
        *("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--user", "10001:10001"),
        *("--security-opt", "no-new-privileges"),
        image,
        "run",
        *(item for flag, port in ports.items() for item in (flag, f"127.0.0.1:{port}")),
        *("--auth", f"127.0.0.1:{auth}", "--log-level", "info"),
    ]
    tester = f"http://127.0.0.1:{auth}/"
    async with containers(name):
        await start(argv)
        await eventually(
            lambda: asyncio.to_thread(lambda: http_get(tester)[0] == 200),
            "the tester page served from the container",
            within=READY_WITHIN,
            explain=lambda: logs(name)[-2000:],
        )
        async with chromium() as browser:
            page = await open_tester(browser, tester)
            found = await verdicts(page)
        calls = found["calls"]
        assert [call["url"].rpartition("=")[2] for call in calls] == ["udp", "tcp"], calls
        for call in calls:
            assert call["status"] == "connected" and call["ok"], call
            assert call["candidateTypesUsed"] == ["relay"], call
