"""``--kubernetes`` end to end: the flags, the credentials (kubeconfig and in-cluster over
TLS), and a whole scaler whose ingest, /metrics, /readyz and KEDA answers carry on while
the Kubernetes API is away."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import grpc
import pytest

from scaler.common.flags import ConfigError
from scaler.common.kube import client as kube_client
from scaler.config import load
from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from scaler.kube.selector import parse_selector
from scaler.kube.settings import resolve
from scaler.server import ScalerServer
from tests.k8s_fake import FakeKubeApi
from tests.reports import as_json, report
from tests.scaler.helpers import FakeClock, value
from tests.scaler.keda_helpers import make_pki
from tests.waiting import eventually

BASE = ["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]


# ---- flags ------------------------------------------------------------------------------


def test_without_kubernetes_the_integration_is_off() -> None:
    assert load(BASE, {}).kubernetes is None


def test_kubernetes_flags_and_their_environment_variables(
    fake: FakeKubeApi, tmp_path: Path
) -> None:
    kubeconfig = fake.kubeconfig(tmp_path)
    config = load(
        [*BASE, "--kubernetes", "--kubeconfig", str(kubeconfig), "--relay-selector", "app=x"], {}
    )
    assert config.kubernetes is not None
    assert config.kubernetes.kubeconfig == kubeconfig
    assert str(config.kubernetes.relay_selector) == "app=x"
    assert config.kubernetes.relay_namespace == ""
    assert config.kubernetes.deletion_cost_interval == 10.0
    environ = {
        "TURNSCALE_KUBERNETES": "true",
        "KUBECONFIG": f"{kubeconfig}:/elsewhere",
        "TURNSCALE_RELAY_SELECTOR": "app=stunner,tier in (a,b)",
        "TURNSCALE_RELAY_NAMESPACE": "stunner",
        "TURNSCALE_DELETION_COST_INTERVAL": "30s",
    }
    config = load(BASE, environ)
    assert config.kubernetes is not None
    assert config.kubernetes.kubeconfig == kubeconfig  # the first of $KUBECONFIG
    assert config.kubernetes.relay_selector.matches({"app": "stunner", "tier": "b"})
    assert config.kubernetes.relay_namespace == "stunner"
    assert config.kubernetes.deletion_cost_interval == 30.0


@pytest.mark.parametrize(
    ("flags", "environ", "names"),
    [
        (["--kubernetes"], {"HOME": "/nonexistent"}, "--kubernetes"),
        (["--kubernetes", "--kubeconfig", "/nonexistent/kubeconfig"], {}, "--kubeconfig"),
        (["--relay-selector", "app in (a"], {}, "--relay-selector"),
        (["--relay-selector", ""], {}, "--relay-selector"),
        (["--relay-namespace", "Not_A_Namespace"], {}, "--relay-namespace"),
        (["--deletion-cost-interval", "soon"], {}, "--deletion-cost-interval"),
    ],
)
def test_bad_kubernetes_flags_are_errors_naming_the_flag(
    flags: list[str], environ: dict[str, str], names: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.kube/config to fall back on
    with pytest.raises(ConfigError, match=names):
        load([*BASE, *flags], environ)


def test_in_a_pod_without_a_token_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token"):
        resolve(
            kubeconfig=None,
            relay_selector=parse_selector("app=stunner"),
            relay_namespace="",
            deletion_cost_interval=10.0,
            environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
            service_account_dir=tmp_path,
        )


# ---- credentials ------------------------------------------------------------------------


async def test_in_cluster_credentials_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("in-cluster-token")
    (account / "ca.crt").write_bytes(pki.ca.read_bytes())
    (account / "namespace").write_text("stunner\n")
    api = FakeKubeApi(token="in-cluster-token", tls=(pki.server_cert, pki.server_key))
    api.add_pod("relay-a")
    await api.start()
    try:
        environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
        for name, value_ in environ.items():
            monkeypatch.setenv(name, value_)
        settings = resolve(
            kubeconfig=None,
            relay_selector=parse_selector("app=stunner"),
            relay_namespace="",
            deletion_cost_interval=10.0,
            environ=environ,
            service_account_dir=account,
        )
        assert settings.access.in_cluster
        connected = await kube_client.connect(settings.access)
        try:
            assert connected.namespace == "stunner"  # the service account's namespace
            assert connected.server == api.url
            response = await connected.core.list_namespaced_pod(
                "stunner", _preload_content=False, _request_timeout=5
            )
            async with response:
                assert response.status == 200
                body = await response.json()
            assert [pod["metadata"]["name"] for pod in body["items"]] == ["relay-a"]
        finally:
            await connected.close()
    finally:
        await api.stop()


async def test_a_broken_kubeconfig_is_a_setup_error(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\ncurrent-context: missing\n")
    settings = resolve(
        kubeconfig=path,
        relay_selector=parse_selector("app=stunner"),
        relay_namespace="",
        deletion_cost_interval=10.0,
        environ={},
    )
    with pytest.raises(kube_client.ClientSetupError, match="kubeconfig"):
        await kube_client.connect(settings.access)


# ---- a whole scaler -----------------------------------------------------------------------


async def test_the_scaler_serves_on_while_the_kubernetes_api_is_away(
    fake: FakeKubeApi, tmp_path: Path
) -> None:
    fake.add_pod("relay-a")
    config = load([*BASE, "--kubernetes", "--kubeconfig", str(fake.kubeconfig(tmp_path))], {})
    server = ScalerServer(config, FakeClock())
    await server.start()
    assert server.kube is not None and server.http_address and server.grpc_address
    http = f"http://{server.http_address}"
    channel = grpc.aio.insecure_channel(str(server.grpc_address))
    stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
    ref = pb.ScaledObjectRef(name="so", namespace="stunner", scalerMetadata={})
    try:
        async with aiohttp.ClientSession() as session:

            async def readyz() -> tuple[int, dict[str, object]]:
                async with session.get(f"{http}/readyz") as response:
                    return response.status, await response.json()

            kube = server.kube
            await eventually(lambda: kube.stats.watch_up, "watching")
            assert await readyz() == (
                200,
                {"ready": True, "checks": {"http": True, "grpc": True, "kubernetes": True}},
            )
            await fake.stop()
            await eventually(lambda: not kube.stats.watch_up, "API away")
            status, body = await readyz()
            assert status == 200  # advisory: shown, not gating
            assert body["checks"] == {"http": True, "grpc": True, "kubernetes": False}
            async with session.post(
                f"{http}/v1/reports",
                data=as_json(report("relay-a", udp=250)),
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status == 202
            async with session.get(f"{http}/v1/scale?gateway=stunner-gateway") as response:
                assert (await response.json())["desiredReplicas"] == 3
            request = pb.GetMetricsRequest(scaledObjectRef=ref, metricName="stunner-allocations")
            answer = await stub.GetMetrics(request, timeout=5)
            assert answer.metricValues[0].metricValue == 250
            async with session.get(f"{http}/metrics") as response:
                text = await response.text()
            assert value(text, "turnscale_kubernetes_watch_up") == 0
            restarts = "turnscale_kubernetes_watch_restarts_total"
            assert value(text, restarts, reason="dropped") == 1
            await fake.start()
            await eventually(lambda: kube.stats.watch_up, "watching again")
    finally:
        await channel.close()
        await server.stop()
    assert server.readiness.checks() == {"http": False, "grpc": False, "kubernetes": False}
