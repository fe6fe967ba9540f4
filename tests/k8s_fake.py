"""A fake Kubernetes API server (aiohttp): list, watch, get and patch, for pods and the
kinds the relay's live mode reads (:data:`RESOURCES`: Secrets, EndpointSlices, Gateways,
GatewayClasses, UDPRoutes, GatewayConfigs, StaticServices).

Faithful to the parts of the API the scaler and the relay use, so the real
kubernetes-asyncio client can be driven against it over loopback. What is said of pods
below holds for every kind, at its own path (``/apis/GROUP/VERSION/...``; cluster-scoped
kinds without ``namespaces/NS``; every namespaced kind also across all namespaces at
``.../PLURAL``). Also: ``fieldSelector`` on ``metadata.name`` and ``metadata.namespace``;
``PATCH .../NAME/status`` (Gateways, UDPRoutes) changes only ``status``, and a spec change
through :meth:`FakeKubeApi.apply` moves ``metadata.generation`` on, as for CRDs with a
status subresource.

- ``GET /api/v1/namespaces/{ns}/pods``: a ``PodList`` with ``metadata.resourceVersion``
  (a consistent read); ``labelSelector`` filters (equality, inequality, existence, set).
- The same with ``watch=true``: newline-delimited JSON watch events, HTTP 200, chunked.
  Without ``resourceVersion`` (or with ``0``) it starts with a synthetic ``ADDED`` per
  existing pod; with one it replays every change after it. A version older than the
  compaction point answers a single ``ERROR`` event whose object is a ``Status`` with
  code 410 (reason ``Expired``), as the API server does. ``allowWatchBookmarks=true``
  gets ``BOOKMARK`` events carrying the current version. ``timeoutSeconds`` ends the
  stream cleanly. A label change across the selector is ``ADDED``/``DELETED`` to the
  watcher, as in the API server.
- ``PATCH /api/v1/namespaces/{ns}/pods/{name}``: ``application/merge-patch+json`` and
  ``application/strategic-merge-patch+json`` (identical for maps like
  ``metadata.annotations``: ``null`` deletes a key); annotation values must be strings
  (else 422); a patch that changes nothing does not write (no new version, no event).
  ``application/json-patch+json`` (RFC 6902 add/replace/remove) too.
- Errors are ``Status`` objects; a missing or wrong bearer token is 401.

Faults for tests: :meth:`FakeKubeApi.fail_next` (error answers), :meth:`drop_watches`
(abort the connections mid-stream), :meth:`expire_watches` (a 410 ``ERROR`` event
mid-stream), :meth:`compact` (older versions answer 410), and stopping and restarting
the server on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import re
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

JsonObj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
NAMESPACED_PODS = "/api/v1/namespaces/{namespace}/pods"


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False  # has a status subresource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


PODS = Resource("", "v1", "pods", "Pod")
SECRETS = Resource("", "v1", "secrets", "Secret")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways", "Gateway", status=True)
GATEWAY_CLASSES = Resource(
    "gateway.networking.k8s.io",
    "v1",
    "gatewayclasses",
    "GatewayClass",
    namespaced=False,
    status=True,
)
UDP_ROUTES = Resource("stunner.l7mp.io", "v1", "udproutes", "UDPRoute", status=True)
GATEWAY_CONFIGS = Resource("stunner.l7mp.io", "v1", "gatewayconfigs", "GatewayConfig")
STATIC_SERVICES = Resource("stunner.l7mp.io", "v1", "staticservices", "StaticService")
REFERENCE_GRANTS = Resource(
    "gateway.networking.k8s.io", "v1beta1", "referencegrants", "ReferenceGrant"
)
# Leader election: created, read and replaced whole (optimistic concurrency on
# metadata.resourceVersion), never patched.
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
RESOURCES = (
    PODS,
    SECRETS,
    ENDPOINT_SLICES,
    GATEWAYS,
    GATEWAY_CLASSES,
    UDP_ROUTES,
    GATEWAY_CONFIGS,
    STATIC_SERVICES,
    REFERENCE_GRANTS,
    LEASES,
)
BY_KIND = {resource.kind: resource for resource in RESOURCES}


def status(code: int, reason: str, message: str) -> JsonObj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


# Go's strconv.ParseBool, which the API server uses for boolean query parameters
# (kubernetes-asyncio sends Python's "True").
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def go_bool(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None or raw in GO_FALSE:
        return False
    if raw in GO_TRUE:
        return True
    raise BadQuery(f"{name}: {raw!r} is not a boolean")


class BadQuery(ValueError):
    pass


def status_response(code: int, message: str) -> web.Response:
    return web.json_response(status(code, REASONS.get(code, "Unknown"), message), status=code)


# ---- label selectors (an implementation of its own, not the scaler's) -----------


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    for requirement in _split_requirements(selector):
        if not _requirement_matches(requirement.strip(), labels):
            return False
    return True


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def _requirement_matches(text: str, labels: Mapping[str, str]) -> bool:
    if match := re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", text):
        key, operator = match.group(1), match.group(2)
        values = {v.strip() for v in match.group(3).split(",")}
        inside = key in labels and labels[key] in values
        return inside if operator == "in" else not inside
    if match := re.fullmatch(r"([^!=\s]+)\s*(!=|==|=)\s*(\S*)", text):
        key, operator, value = match.groups()
        equal = labels.get(key) == value
        return not equal if operator == "!=" else equal
    if text.startswith("!"):
        return text[1:].strip() not in labels
    return text in labels


class BadSelector(ValueError):
    pass


def check_selector(selector: str) -> None:
    for requirement in _split_requirements(selector):
        text = requirement.strip()
        if not re.fullmatch(
            r"(\S+\s+(in|notin)\s*\(.*\))|([^!=\s]+\s*(!=|==|=)\s*\S*)|(!?\s*[^!=\s(),]+)", text
        ):
            raise BadSelector(f"unable to parse requirement: {text!r}")


def field_selector_matches(selector: str, obj: JsonObj) -> bool:
    """``metadata.name`` and ``metadata.namespace`` with ``=``, ``==`` or ``!=`` (checked)."""
    metadata = obj["metadata"]
    for requirement in filter(None, (part.strip() for part in selector.split(","))):
        match = re.fullmatch(
            r"(metadata\.name|metadata\.namespace)\s*(!=|==|=)\s*(\S*)", requirement
        )
        if match is None:
            raise BadSelector(f'field label not supported: "{requirement}"')
        field_name, operator, value = match.groups()
        actual = metadata.get(field_name.partition(".")[2], "")
        if (actual == value) == (operator == "!="):
            return False
    return True


# ---- patches ----------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: JsonObj, operations: list[Any]) -> JsonObj:
    """RFC 6902 add, replace, remove (what the scaler could send)."""
    result = copy.deepcopy(target)
    for operation in operations:
        op, path = operation.get("op"), operation.get("path", "")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if not parts:
            raise ValueError(f"bad path {path!r}")
        parent: Any = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op in ("add", "replace"):
            if op == "replace" and last not in parent:
                raise ValueError(f"replace of missing {path!r}")
            parent[last] = operation["value"]
        elif op == "remove":
            del parent[last]
        else:
            raise ValueError(f"unsupported op {op!r}")
    return result


# ---- the server ---------------------------------------------------------------------


@dataclass
class Change:
    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    old: JsonObj | None
    new: JsonObj
    resource: Resource = PODS


@dataclass(eq=False)
class Watcher:
    namespace: str  # "" for every namespace
    selector: str
    queue: asyncio.Queue[JsonObj | None] = field(default_factory=asyncio.Queue)
    request: web.Request | None = None
    resource: Resource = PODS
    fields: str = ""

    def offer(self, change: Change) -> None:
        if change.resource != self.resource:
            return
        event = watch_event_for(change, self.namespace, self.selector, self.fields)
        if event is not None:
            self.queue.put_nowait(event)


def _matches(obj: JsonObj | None, namespace: str, selector: str, fields: str = "") -> bool:
    if obj is None:
        return False
    metadata = obj["metadata"]
    return (
        (not namespace or metadata.get("namespace", "") == namespace)
        and selector_matches(selector, metadata.get("labels") or {})
        and field_selector_matches(fields, obj)
    )


def watch_event_for(
    change: Change, namespace: str, selector: str, fields: str = ""
) -> JsonObj | None:
    """What a watcher with this namespace and selectors sees of a change."""
    was = _matches(change.old, namespace, selector, fields)
    now = _matches(change.new, namespace, selector, fields)
    if change.type == "DELETED":
        return {"type": "DELETED", "object": change.new} if was else None
    if was and now:
        return {"type": "MODIFIED", "object": change.new}
    if now:
        return {"type": "ADDED", "object": change.new}
    if was:
        return {"type": "DELETED", "object": change.new}
    return None


@dataclass
class Fault:
    operation: str  # list, watch, patch, get
    status: int
    count: int


class FakeKubeApi:
    def __init__(
        self,
        *,
        token: str = "fake-token",
        bookmark_interval: float = 0.2,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.tls = tls
        self.objects: dict[Resource, dict[tuple[str, str], JsonObj]] = {r: {} for r in RESOURCES}
        self.pods: dict[tuple[str, str], JsonObj] = self.objects[PODS]
        self.resource_version = 1000
        self.changes: list[Change] = []
        # Watches from a version older than this answer 410 Gone.
        self.oldest_version = self.resource_version
        self.watchers: set[Watcher] = set()
        self.faults: list[Fault] = []
        self.requests: dict[str, int] = {}
        self.patches: list[tuple[str, str, str, Any]] = []  # namespace, name, type, body
        self.watch_queries: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        # Cleared by stall(): requests are accepted but not answered, like an API server
        # behind a broken network path.
        self._answering = asyncio.Event()
        self._answering.set()

    # ---- lifecycle ----------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._stall_middleware])
        for resource in RESOURCES:
            self._route(app, resource)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    def _route(self, app: web.Application, resource: Resource) -> None:
        def bind(handler: Any, **extra: Any) -> Any:
            return functools.partial(handler, resource=resource, **extra)

        collections = [f"{resource.prefix}/{resource.plural}"]
        if resource.namespaced:
            collections.insert(0, f"{resource.prefix}/namespaces/{{namespace}}/{resource.plural}")
        for collection in collections:
            app.router.add_get(collection, bind(self._list_or_watch))
        item = collections[0] + "/{name}"
        app.router.add_get(item, bind(self._get))
        app.router.add_patch(item, bind(self._patch))
        if resource == LEASES:
            app.router.add_post(collections[0], bind(self._create))
            app.router.add_put(item, bind(self._replace))
        if resource.status:
            app.router.add_patch(item + "/status", bind(self._patch, status_only=True))

    @web.middleware
    async def _stall_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        await self._answering.wait()
        response: web.StreamResponse = await handler(request)
        return response

    def stall(self) -> None:
        """Accept requests but answer none until :meth:`resume`."""
        self._answering.clear()

    def resume(self) -> None:
        self._answering.set()

    async def stop(self) -> None:
        """Stop serving (connections refused until :meth:`start` again, same port)."""
        self.drop_watches()
        self._answering.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def kubeconfig(
        self, directory: Path, namespace: str = "stunner", *, server: str | None = None
    ) -> Path:
        """A kubeconfig for this API (or for ``server``, a path to it such as a proxy)."""
        path = directory / "kubeconfig"
        if server is not None:
            path = directory / f"kubeconfig-{server.rpartition(':')[2]}"
        cluster: JsonObj = {"server": server or self.url}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    # ---- state changes (what kubelet, controllers and users would do) ---------

    def _bump(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def _record(
        self, kind: str, old: JsonObj | None, new: JsonObj, resource: Resource = PODS
    ) -> None:
        version = int(new["metadata"]["resourceVersion"])
        change = Change(version, kind, old, copy.deepcopy(new), resource)
        self.changes.append(change)
        for watcher in list(self.watchers):
            watcher.offer(change)

    def add_pod(
        self,
        name: str,
        *,
        namespace: str = "stunner",
        labels: Mapping[str, str] | None = None,
        ready: bool = True,
        phase: str = "Running",
        annotations: Mapping[str, str] | None = None,
        ip: str = "127.0.0.1",  # where the tests' relays report from
    ) -> JsonObj:
        metadata: JsonObj = {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(self._bump()),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": dict(labels if labels is not None else {"app": "stunner"}),
        }
        if annotations:
            metadata["annotations"] = dict(annotations)
        pod: JsonObj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"containers": [{"name": "relay", "image": "turnscale:test"}]},
            "status": {
                "phase": phase,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
            },
        }
        self.pods[(namespace, name)] = pod
        self._record("ADDED", None, pod)
        return pod

    def update_pod(self, name: str, namespace: str = "stunner", **changes: Any) -> JsonObj:
        """Change a pod (ready, phase, labels, deleting); a MODIFIED event."""
        old = self.pods[(namespace, name)]
        pod = copy.deepcopy(old)
        if "ready" in changes:
            ready = "True" if changes["ready"] else "False"
            pod["status"]["conditions"] = [{"type": "Ready", "status": ready}]
        if "phase" in changes:
            pod["status"]["phase"] = changes["phase"]
        if "labels" in changes:
            pod["metadata"]["labels"] = dict(changes["labels"])
        if changes.get("deleting"):
            pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:10:00Z"
            pod["metadata"]["deletionGracePeriodSeconds"] = 3600
        pod["metadata"]["resourceVersion"] = str(self._bump())
        self.pods[(namespace, name)] = pod
        self._record("MODIFIED", old, pod)
        return pod

    def delete_pod(self, name: str, namespace: str = "stunner") -> None:
        old = self.pods.pop((namespace, name))
        final = copy.deepcopy(old)
        final["metadata"]["resourceVersion"] = str(self._bump())
        self._record("DELETED", old, final)

    def annotations(self, name: str, namespace: str = "stunner") -> dict[str, str]:
        found: dict[str, str] = self.pods[(namespace, name)]["metadata"].get("annotations", {})
        return dict(found)

    def apply(self, obj: Mapping[str, Any]) -> JsonObj:
        """Create or replace an object of any kind in :data:`RESOURCES` (like ``kubectl
        apply``): ADDED or MODIFIED; a spec change moves ``metadata.generation`` on, a
        change of nothing writes nothing. ``status`` is kept from the stored object."""
        resource = BY_KIND[obj["kind"]]
        new = copy.deepcopy(dict(obj))
        new["apiVersion"] = new.get("apiVersion") or resource.api_version
        metadata = new.setdefault("metadata", {})
        if resource.namespaced:
            metadata.setdefault("namespace", "default")
        else:
            metadata.pop("namespace", None)
        key = (metadata.get("namespace", ""), metadata["name"])
        table = self.objects[resource]
        old = table.get(key)
        if old is None:
            metadata.update(
                uid=str(uuid.uuid4()), generation=1, creationTimestamp="2026-01-01T00:00:00Z"
            )
        else:
            for kept in ("uid", "generation", "creationTimestamp", "resourceVersion"):
                metadata[kept] = old["metadata"][kept]
            if resource.status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
            if new == old:
                return copy.deepcopy(old)
            if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
                k: v for k, v in old.items() if k not in ("metadata", "status")
            }:
                metadata["generation"] = old["metadata"]["generation"] + 1
        metadata["resourceVersion"] = str(self._bump())
        table[key] = new
        self._record("ADDED" if old is None else "MODIFIED", old, new, resource)
        return copy.deepcopy(new)

    def delete(self, kind: str, name: str, namespace: str = "stunner") -> None:
        """Delete an object of any kind: DELETED."""
        resource = BY_KIND[kind]
        key = (namespace if resource.namespaced else "", name)
        old = self.objects[resource].pop(key)
        final = copy.deepcopy(old)
        final["metadata"]["resourceVersion"] = str(self._bump())
        self._record("DELETED", old, final, resource)

    def get(self, kind: str, name: str, namespace: str = "stunner") -> JsonObj | None:
        resource = BY_KIND[kind]
        found = self.objects[resource].get((namespace if resource.namespaced else "", name))
        return copy.deepcopy(found) if found is not None else None

    # ---- faults ---------------------------------------------------------------

    def fail_next(self, operation: str, status: int = 500, count: int = 1) -> None:
        """The next ``count`` requests of ``operation`` (list, watch, patch, get, create,
        update) fail."""
        self.faults.append(Fault(operation, status, count))

    def drop_watches(self) -> None:
        """Abort every open watch connection mid-stream (no clean end of the chunks)."""
        for watcher in list(self.watchers):
            if watcher.request is not None and watcher.request.transport is not None:
                watcher.request.transport.abort()
            watcher.queue.put_nowait(None)

    def expire_watches(self) -> None:
        """Send a 410 ERROR event on every open watch, as when a watcher falls behind."""
        gone = status(410, "Expired", "too old resource version")
        for watcher in list(self.watchers):
            watcher.queue.put_nowait({"type": "ERROR", "object": gone})

    def compact(self) -> None:
        """Other writes happen, then etcd compacts: watches from any version handed out so
        far answer 410, and only a new list gives a version to watch from."""
        self.oldest_version = self._bump()
        self.changes.clear()

    def _fault(self, operation: str) -> web.Response | None:
        for fault in self.faults:
            if fault.operation == operation and fault.count > 0:
                fault.count -= 1
                return status_response(fault.status, f"injected {operation} failure")
        return None

    # ---- handlers -------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    async def _list_or_watch(
        self, request: web.Request, resource: Resource = PODS
    ) -> web.StreamResponse:
        try:
            watching = go_bool(request.query, "watch")
            bookmarks = go_bool(request.query, "allowWatchBookmarks")
        except BadQuery as exc:
            return status_response(400, str(exc))
        operation = "watch" if watching else "list"
        self.requests[operation] = self.requests.get(operation, 0) + 1
        if not self._authorized(request):
            return status_response(401, "Unauthorized")
        fault = self._fault(operation)
        if fault is not None:
            return fault
        selector = request.query.get("labelSelector", "")
        fields = request.query.get("fieldSelector", "")
        try:
            check_selector(selector)
            field_selector_matches(fields, {"metadata": {}})
        except BadSelector as exc:
            return status_response(400, str(exc))
        namespace = request.match_info.get("namespace", "")
        if watching:
            self.watch_queries.append(dict(request.query))
            return await self._watch(
                request, namespace, selector, bookmarks, resource=resource, fields=fields
            )
        items = [
            copy.deepcopy(obj)
            for _, obj in sorted(self.objects[resource].items())
            if _matches(obj, namespace, selector, fields)
        ]
        return web.json_response(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(self.resource_version)},
                "items": items,
            }
        )

    async def _watch(
        self,
        request: web.Request,
        namespace: str,
        selector: str,
        bookmarks: bool,
        *,
        resource: Resource = PODS,
        fields: str = "",
    ) -> web.StreamResponse:
        query = request.query
        timeout = float(query.get("timeoutSeconds", "1800"))
        since = query.get("resourceVersion", "")
        watcher = Watcher(namespace, selector, request=request, resource=resource, fields=fields)
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        await response.prepare(request)
        if since in ("", "0"):
            for _, obj in sorted(self.objects[resource].items(), key=lambda item: item[0][::-1]):
                if _matches(obj, namespace, selector, fields):
                    watcher.queue.put_nowait({"type": "ADDED", "object": copy.deepcopy(obj)})
        elif int(since) < self.oldest_version:
            gone = status(410, "Expired", f"too old resource version: {since}")
            await self._write(response, {"type": "ERROR", "object": gone})
            return response
        else:
            for change in self.changes:
                if change.resource_version > int(since):
                    watcher.offer(change)
        self.watchers.add(watcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                wait = min(left, self.bookmark_interval) if bookmarks else left
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and loop.time() < deadline:
                        await self._write(response, self._bookmark(resource))
                    continue
                if event is None:
                    return response  # dropped: the transport is gone
                await self._write(response, event)
                if event["type"] == "ERROR":
                    break
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self.watchers.discard(watcher)
        return response

    def _bookmark(self, resource: Resource = PODS) -> JsonObj:
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": resource.kind,
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(self.resource_version)},
            },
        }

    @staticmethod
    async def _write(response: web.StreamResponse, event: JsonObj) -> None:
        await response.write(json.dumps(event).encode() + b"\n")

    async def _get(self, request: web.Request, resource: Resource = PODS) -> web.Response:
        self.requests["get"] = self.requests.get("get", 0) + 1
        if not self._authorized(request):
            return status_response(401, "Unauthorized")
        fault = self._fault("get")
        if fault is not None:
            return fault
        key = (request.match_info.get("namespace", ""), request.match_info["name"])
        found = self.objects[resource].get(key)
        if found is None:
            return status_response(404, f'{resource.plural} "{key[1]}" not found')
        return web.json_response(found)

    async def _patch(
        self, request: web.Request, resource: Resource = PODS, status_only: bool = False
    ) -> web.Response:
        self.requests["patch"] = self.requests.get("patch", 0) + 1
        if not self._authorized(request):
            return status_response(401, "Unauthorized")
        fault = self._fault("patch")
        if fault is not None:
            return fault
        key = (request.match_info.get("namespace", ""), request.match_info["name"])
        content_type = request.content_type
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return status_response(400, f"body is not JSON: {exc}")
        self.patches.append((key[0], key[1], content_type, body))
        table = self.objects[resource]
        old = table.get(key)
        if old is None:
            return status_response(404, f'{resource.plural} "{key[1]}" not found')
        try:
            if content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
                if not isinstance(body, dict):
                    return status_response(400, "a merge patch must be a JSON object")
                pod = merge_patch(old, body)
            elif content_type == JSON_PATCH:
                if not isinstance(body, list):
                    return status_response(400, "a JSON patch must be a list")
                pod = json_patch(old, body)
            else:
                return status_response(415, f"the patch type {content_type!r} is not supported")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            return status_response(422, f"the patch cannot be applied: {exc}")
        annotations = pod["metadata"].get("annotations") or {}
        if not all(isinstance(v, str) for v in annotations.values()):
            return status_response(422, "metadata.annotations: values must be strings")
        for frozen in ("name", "namespace", "uid"):
            if pod["metadata"].get(frozen) != old["metadata"].get(frozen):
                return status_response(422, f"metadata.{frozen}: field is immutable")
        if status_only:  # the status subresource: everything but status is ignored
            pod = {**copy.deepcopy(old), "status": pod.get("status")}
            if pod["status"] is None:
                del pod["status"]
        elif resource.status:  # the main resource: status changes are ignored
            pod = {k: v for k, v in pod.items() if k != "status"}
            if "status" in old:
                pod["status"] = copy.deepcopy(old["status"])
        pod["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if pod == old:
            return web.json_response(old)  # a no-op patch writes nothing
        pod["metadata"]["resourceVersion"] = str(self._bump())
        table[key] = pod
        self._record("MODIFIED", old, pod, resource)
        return web.json_response(pod)

    async def _create(self, request: web.Request, resource: Resource = LEASES) -> web.Response:
        """POST: a new object; 409 AlreadyExists when the name is taken."""
        self.requests["create"] = self.requests.get("create", 0) + 1
        if not self._authorized(request):
            return status_response(401, "Unauthorized")
        fault = self._fault("create")
        if fault is not None:
            return fault
        namespace = request.match_info.get("namespace", "")
        try:
            body = json.loads(await request.read())
            name = body["metadata"]["name"]
        except (ValueError, KeyError, TypeError) as exc:
            return status_response(400, f"not an object with metadata.name: {exc}")
        table = self.objects[resource]
        if (namespace, name) in table:
            return status_response(409, f'{resource.plural} "{name}" already exists')
        body["apiVersion"], body["kind"] = resource.api_version, resource.kind
        body["metadata"].update(
            namespace=namespace, uid=f"uid-{name}", resourceVersion=str(self._bump())
        )
        table[(namespace, name)] = body
        self._record("ADDED", None, body, resource)
        return web.json_response(body, status=201)

    async def _replace(self, request: web.Request, resource: Resource = LEASES) -> web.Response:
        """PUT: the whole object; 409 Conflict unless it names the current resourceVersion."""
        self.requests["update"] = self.requests.get("update", 0) + 1
        if not self._authorized(request):
            return status_response(401, "Unauthorized")
        fault = self._fault("update")
        if fault is not None:
            return fault
        key = (request.match_info.get("namespace", ""), request.match_info["name"])
        try:
            body = json.loads(await request.read())
            version = body["metadata"].get("resourceVersion")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return status_response(400, f"not an object with metadata: {exc}")
        table = self.objects[resource]
        old = table.get(key)
        if old is None:
            return status_response(404, f'{resource.plural} "{key[1]}" not found')
        if version != old["metadata"]["resourceVersion"]:
            return status_response(
                409,
                f'Operation cannot be fulfilled on {resource.plural} "{key[1]}": the object '
                "has been modified; please apply your changes to the latest version",
            )
        body["apiVersion"], body["kind"] = resource.api_version, resource.kind
        body["metadata"].update(
            namespace=key[0], uid=old["metadata"]["uid"], resourceVersion=str(self._bump())
        )
        table[key] = body
        self._record("MODIFIED", old, body, resource)
        return web.json_response(body)


# ---- wiring the scaler to the fake (kept apart from the fake's own logic) -------------


def fast_timing() -> Any:
    """Watch timing for tests: short watches, quick backoff (all bounded)."""
    from scaler.common.kube.reflector import WatchTiming

    return WatchTiming(
        watch_seconds=(2, 2),
        read_slack=2.0,
        connect_timeout=1.0,
        list_timeout=2.0,
        backoff_initial=0.01,
        backoff_max=0.05,
    )


def kube_settings(
    fake: FakeKubeApi,
    directory: Path,
    *,
    selector: str = "app=stunner",
    namespace: str = "",
    deletion_cost_interval: float = 3600.0,
) -> Any:
    """Settings the way ``--kubernetes --kubeconfig PATH`` resolves them."""
    from scaler.kube.selector import parse_selector
    from scaler.kube.settings import resolve

    return resolve(
        kubeconfig=fake.kubeconfig(directory),
        relay_selector=parse_selector(selector),
        relay_namespace=namespace,
        deletion_cost_interval=deletion_cost_interval,
        environ={},
    )
