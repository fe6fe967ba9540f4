"""The scaler's relay pod watch: :class:`scaler.common.kube.reflector.Reflector` over
``list_namespaced_pod`` with the relay label selector, delivering :class:`PodInfo`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any, Protocol

from scaler.common import logs
from scaler.common.kube.reflector import (
    DEFAULT_TIMING,
    Health,
    Reflector,
    Sleep,
    WatchTiming,
)
from scaler.kube.pods import PodInfo, PodObjectError, pod_info
from scaler.kube.stats import KubeStats

log = logs.get("scaler.kube")


class PodEvents(Health, Protocol):
    """Where the pod watcher delivers what it learns."""

    def listed(self, pods: list[PodInfo]) -> None: ...

    def changed(self, event_type: str, pod: PodInfo) -> None: ...


class PodWatcher(Reflector):
    """The relay pods (``list_namespaced_pod`` with a label selector), as PodInfo."""

    what = "relay pods"

    def __init__(
        self,
        api: Any,  # kubernetes_asyncio.client.CoreV1Api
        namespace: str,
        selector: str,
        sink: PodEvents,
        stats: KubeStats,
        *,
        timing: WatchTiming = DEFAULT_TIMING,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(sink, stats, timing=timing, sleep=sleep, rng=rng)
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.sink = sink

    async def _request(self, **query: Any) -> Any:
        return await self.api.list_namespaced_pod(
            self.namespace, label_selector=self.selector, **query
        )

    def _listed(self, items: list[Any]) -> None:
        pods = []
        for item in items:
            try:
                pods.append(pod_info(item))
            except PodObjectError as exc:
                log.warning("kubernetes pod list item skipped", error=str(exc))
        self.sink.listed(pods)

    def _changed(self, event_type: str, obj: Any) -> None:
        try:
            pod = pod_info(obj)
        except PodObjectError as exc:
            log.warning("kubernetes watch event skipped", error=str(exc), type=event_type)
        else:
            self.sink.changed(event_type, pod)

    def _log_context(self) -> dict[str, str]:
        return {"namespace": self.namespace, "selector": self.selector}
