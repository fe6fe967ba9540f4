"""The fake API server's Leases, driven through kubernetes-asyncio's own Lease lock: what
leader election needs (get, create, replace with resourceVersion conflicts)."""

from __future__ import annotations

from pathlib import Path

from kubernetes_asyncio import client
from kubernetes_asyncio.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from scaler.common.kube.access import KubeAccess
from scaler.common.kube.client import connect
from tests.k8s_fake import FakeKubeApi


def record(holder: str) -> LeaderElectionRecord:
    now = "2026-12-01 08:00:00.000000"
    return LeaderElectionRecord(holder, "15", now, now)


async def test_leases_are_created_read_and_replaced_with_optimistic_concurrency(
    tmp_path: Path,
) -> None:
    api = FakeKubeApi()
    await api.start()
    kube = await connect(KubeAccess(api.kubeconfig(tmp_path)))
    try:
        first = LeaseLock("turnscale-scaler", "stunner", "scaler-a", kube.api_client)
        second = LeaseLock("turnscale-scaler", "stunner", "scaler-b", kube.api_client)
        found, missing = await first.get("turnscale-scaler", "stunner")
        assert not found and isinstance(missing, client.ApiException) and missing.status == 404
        assert await first.create("turnscale-scaler", "stunner", record("scaler-a"))
        # A second create of the same name is refused (409 AlreadyExists).
        assert not await second.create("turnscale-scaler", "stunner", record("scaler-b"))
        found, held = await second.get("turnscale-scaler", "stunner")
        assert found and isinstance(held, LeaderElectionRecord)
        assert held.holder_identity == "scaler-a" and held.lease_duration == "15"
        found, _ = await first.get("turnscale-scaler", "stunner")
        assert await first.update("turnscale-scaler", "stunner", record("scaler-a"))
        # The second candidate still holds the version before that renewal: conflict.
        assert not await second.update("turnscale-scaler", "stunner", record("scaler-b"))
        stored = api.get("Lease", "turnscale-scaler")
        assert stored is not None and stored["spec"]["holderIdentity"] == "scaler-a"
        assert api.requests["update"] == 2 and api.requests["create"] == 2
    finally:
        await kube.close()
        await api.stop()
