"""Live mode's watches: every object the relay's Gateway depends on, kept in memory.

One :class:`ObjectWatch` per kind and scope lists, then watches, through kubernetes-asyncio
(:class:`scaler.common.kube.reflector.Reflector`: resumes after a dropped connection, lists again
after ``410 Gone``, backs off on errors) and keeps the raw objects. :class:`Watches` owns
them: the fixed ones (Gateways of the relay's namespace, GatewayClasses, and UDPRoutes,
GatewayConfigs and StaticServices of every namespace) and the ones that follow the
configuration (each referenced Secret by name, the ReferenceGrants of a namespace a
listener's certificate ref points into, each routed Service's EndpointSlices by the
``kubernetes.io/service-name`` label). Any change calls ``changed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from scaler.common import logs, runtime
from scaler.common.kube.reflector import DEFAULT_TIMING, NoStats, Reflector, WatchTiming

__all__ = ["Apis", "ObjectWatch", "Scope", "Watches"]

log = logs.get("relay.gateway")

Raw = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    group: str  # "" for the core group
    version: str
    plural: str


KINDS: Final = {
    "Gateway": Kind("gateway.networking.k8s.io", "v1", "gateways"),
    "GatewayClass": Kind("gateway.networking.k8s.io", "v1", "gatewayclasses"),
    "UDPRoute": Kind("stunner.l7mp.io", "v1", "udproutes"),
    "GatewayConfig": Kind("stunner.l7mp.io", "v1", "gatewayconfigs"),
    "StaticService": Kind("stunner.l7mp.io", "v1", "staticservices"),
    "ReferenceGrant": Kind("gateway.networking.k8s.io", "v1beta1", "referencegrants"),
    "Secret": Kind("", "v1", "secrets"),
    "EndpointSlice": Kind("discovery.k8s.io", "v1", "endpointslices"),
}
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
MERGE_PATCH: Final = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Scope:
    """What one watch covers: a kind, a namespace (None: all, or cluster-scoped) and
    selectors."""

    kind: str
    namespace: str | None = None
    labels: str | None = None
    fields: str | None = None

    def __str__(self) -> str:
        where = self.namespace or "*"
        select = ",".join(filter(None, (self.labels, self.fields)))
        return f"{self.kind}/{where}" + (f"[{select}]" if select else "")


class Apis:
    """The kubernetes-asyncio APIs of one client."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes_asyncio import client

        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)

    async def request(self, scope: Scope, **query: Any) -> Any:
        """List (or with ``watch=True`` watch) ``scope``; the raw response."""
        if scope.labels is not None:
            query["label_selector"] = scope.labels
        if scope.fields is not None:
            query["field_selector"] = scope.fields
        kind = KINDS[scope.kind]
        if scope.kind == "Secret":
            assert scope.namespace is not None
            return await self.core.list_namespaced_secret(scope.namespace, **query)
        if scope.kind == "EndpointSlice":
            assert scope.namespace is not None
            return await self.discovery.list_namespaced_endpoint_slice(scope.namespace, **query)
        if scope.namespace is None:
            return await self.custom.list_cluster_custom_object(
                kind.group, kind.version, kind.plural, **query
            )
        return await self.custom.list_namespaced_custom_object(
            kind.group, kind.version, scope.namespace, kind.plural, **query
        )

    async def patch_status(self, kind_name: str, namespace: str, name: str, status: Raw) -> None:
        """Merge-patch the status subresource (kubernetes-asyncio would pick JSON Patch for a
        dict body, so the content type is given)."""
        kind = KINDS[kind_name]
        await self.custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )


def key_of(obj: Raw) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class _Quiet:
    def health(self, up: bool) -> None:
        pass


class ObjectWatch(Reflector):
    """The objects of one :class:`Scope`, by ``(namespace, name)``."""

    def __init__(
        self,
        apis: Apis,
        scope: Scope,
        changed: Callable[[], None],
        *,
        timing: WatchTiming = DEFAULT_TIMING,
    ) -> None:
        super().__init__(_Quiet(), NoStats(), timing=timing)
        self.apis = apis
        self.scope = scope
        self.changed = changed
        self.what = str(scope)
        self.items: dict[tuple[str, str], Raw] = {}
        self.synced = False

    async def _request(self, **query: Any) -> Any:
        return await self.apis.request(self.scope, **query)

    def _listed(self, items: list[Any]) -> None:
        self.items = {key_of(obj): obj for obj in items if isinstance(obj, dict)}
        self.synced = True
        self.changed()

    def _changed(self, event_type: str, obj: Any) -> None:
        if event_type == "DELETED":
            self.items.pop(key_of(obj), None)
        else:
            self.items[key_of(obj)] = obj
        self.changed()

    def _log_context(self) -> dict[str, str]:
        return {"watch": str(self.scope)}


class Watches:
    """The running watches, and the objects they hold."""

    def __init__(
        self,
        apis: Apis,
        changed: Callable[[], None],
        *,
        timing: WatchTiming = DEFAULT_TIMING,
    ) -> None:
        self.apis = apis
        self.changed = changed
        self.timing = timing
        self.watches: dict[Scope, ObjectWatch] = {}
        self._tasks: dict[Scope, asyncio.Task[None]] = {}

    def start(self, scope: Scope) -> None:
        if scope in self.watches:
            return
        watch = ObjectWatch(self.apis, scope, self.changed, timing=self.timing)
        self.watches[scope] = watch
        self._tasks[scope] = asyncio.create_task(watch.run(), name=f"watch {scope}")
        log.debug("watch started", watch=str(scope))

    async def stop(self, scope: Scope) -> None:
        task = self._tasks.pop(scope, None)
        watch = self.watches.pop(scope, None)
        await runtime.cancel_and_wait(task)
        if watch is not None and watch.items:
            self.changed()

    async def follow(self, kind: str, wanted: Iterable[Scope]) -> None:
        """Run exactly the ``wanted`` watches of ``kind``."""
        wanted = set(wanted)
        for scope in [s for s in self.watches if s.kind == kind and s not in wanted]:
            await self.stop(scope)
        for scope in sorted(wanted, key=str):
            self.start(scope)

    async def close(self) -> None:
        for scope in list(self.watches):
            await self.stop(scope)

    def synced(self, kinds: Iterable[str]) -> bool:
        """Whether every watch of ``kinds`` has listed once."""
        kinds = set(kinds)
        return all(w.synced for s, w in self.watches.items() if s.kind in kinds)

    def listed(self, scope: Scope) -> bool:
        """Whether the watch of ``scope`` runs and has listed once."""
        watch = self.watches.get(scope)
        return watch is not None and watch.synced

    def objects(self, kind: str) -> dict[tuple[str, str], Raw]:
        """Every object of ``kind`` the watches hold."""
        found: dict[tuple[str, str], Raw] = {}
        for scope, watch in self.watches.items():
            if scope.kind == kind:
                found.update(watch.items)
        return found


def secret_scope(namespace: str, name: str) -> Scope:
    return Scope("Secret", namespace, fields=f"metadata.name={name}")


def endpoints_scope(namespace: str, service: str) -> Scope:
    return Scope("EndpointSlice", namespace, labels=f"{SERVICE_NAME_LABEL}={service}")


def endpoint_addresses(slices: Iterable[Raw], service: str) -> frozenset[str]:
    """The addresses of ``service``'s ready endpoints (a terminating one is leaving: left out,
    and the relay keeps it for the calls already using it)."""
    found: set[str] = set()
    for item in slices:
        labels = (item.get("metadata") or {}).get("labels") or {}
        if labels.get(SERVICE_NAME_LABEL) != service:
            continue
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            found.update(str(a) for a in endpoint.get("addresses") or [])
    return frozenset(found)
