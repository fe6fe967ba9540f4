"""Fixtures the scaler's tests share: a fake clock, the fake Kubernetes API server, and a
scaler built with ``--kubernetes`` against it of which only the integration runs."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from scaler.kube.integration import KubeIntegration
from scaler.server import ScalerServer
from tests.k8s_fake import FakeKubeApi, fast_timing, kube_settings
from tests.scaler.helpers import FakeClock, scaler_config

StartKube = Callable[..., Awaitable[tuple[KubeIntegration, ScalerServer]]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubeApi]:
    """A running fake API server without pods (bookmarks every 50 ms)."""
    api = FakeKubeApi(bookmark_interval=0.05)
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def start_kube(
    fake: FakeKubeApi, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[StartKube]:
    """``await start_kube(**settings)``: a whole scaler (not started) on ``clock`` whose
    Kubernetes integration watches ``fake``; ``settings`` go to ``kube_settings``.

    Its listeners' checks are ok, as while it serves. Only the integration runs; every
    one started is stopped afterwards.
    """
    running: list[KubeIntegration] = []

    async def start(**settings: Any) -> tuple[KubeIntegration, ScalerServer]:
        config = dataclasses.replace(
            scaler_config(), kubernetes=kube_settings(fake, tmp_path, **settings)
        )
        scaler = ScalerServer(config, clock, kube_timing=fast_timing())
        assert scaler.kube is not None
        scaler.readiness["http"].ok = scaler.readiness["grpc"].ok = True
        await scaler.kube.start()
        running.append(scaler.kube)
        return scaler.kube, scaler

    yield start
    for integration in running:
        await integration.stop()
