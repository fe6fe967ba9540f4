"""``turnscale relay --kubernetes``: the relay follows its Gateway API objects as they change.

The relay's Gateway is ``--namespace``/``--gateway``. :class:`LiveGateway` keeps
:class:`relay.gateway.kube.Watches` on everything it depends on and, after every change,
translates the objects again (:func:`relay.gateway.translate.translate`, the same as file
mode) and applies the difference to the running :class:`relay.net.server.RelayServer`:

* listeners: only those added, removed or changed are opened or closed. A TURN-TLS (or
  TURN-DTLS) listener serves the ``kubernetes.io/tls`` Secret of its
  ``tls.certificateRefs``, watched by name and written into a private directory
  (:class:`relay.gateway.certificates.CertificateStore`); an updated Secret applies to new
  handshakes, established connections keep theirs. A Secret that is missing, lacks
  ``tls.crt``/``tls.key`` or holds a bad pair leaves that listener alone (its previous pair
  stays, or it is not opened) with ``ResolvedRefs`` False, ``InvalidCertificateRef``; the
  other listeners are served;
* credentials (realm, user, shared secret): swapped; allocations stay, and their next
  Refresh must pass the new credentials;
* peers: the StaticService prefixes and the ready endpoints of each routed Service's
  EndpointSlices; a peer that leaves stays reachable for the allocations already talking
  to it (:meth:`relay.core.handler.RequestHandler.set_policy`).

A configuration that cannot be used (an invalid Gateway or GatewayConfig, a missing
Secret) changes nothing: the relay keeps the last good one (or, before any, serves no
listener and is not ready). The Gateway's ``Accepted`` and ``Programmed`` conditions and each
attached UDPRoute's ``Accepted`` and ``ResolvedRefs`` say what happened, with a reason when
refused.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.config import Listen
from relay.core.certs import TlsFiles
from relay.core.credentials import Credentials
from relay.core.peer_policy import PeerRule
from relay.gateway.certificates import CertificateStore
from relay.gateway.kube import (
    Apis,
    Scope,
    Watches,
    endpoint_addresses,
    endpoints_scope,
    secret_scope,
)
from relay.gateway.objects import GATEWAY_GROUP, GatewayError, describe, parse
from relay.gateway.options import GatewayOptions, listen_of, relay_fields
from relay.gateway.peers import Peers
from relay.gateway.status import (
    DEFAULT_CONTROLLER,
    Condition,
    ListenerStatus,
    gateway_reason,
    gateway_status,
    route_status,
    route_status_detached,
    unchanged,
)
from relay.gateway.translate import (
    Catalog,
    EphemeralAuth,
    GatewaySettings,
    ListenerSettings,
    RefProblem,
    translate,
)
from relay.net.server import RelayServer, StartupError
from scaler.common import logs, runtime
from scaler.common.kube.reflector import DEFAULT_TIMING, WatchTiming

__all__ = [
    "Follower",
    "LiveGateway",
    "LiveSecrets",
    "Reading",
    "gateway_scopes",
    "read_gateway",
]

log = logs.get("relay.gateway")

GATEWAY_KINDS = ("Gateway", "GatewayClass", "UDPRoute", "GatewayConfig", "StaticService")
Raw = dict[str, Any]


class LiveSecrets:
    """Secrets from the watches, for :func:`translate`; remembers which were asked for."""

    def __init__(self, secrets: Mapping[tuple[str, str], Raw]) -> None:
        self.secrets = secrets
        self.requested: set[tuple[str, str]] = set()

    def secret(self, namespace: str, name: str) -> Mapping[str, str]:
        self.requested.add((namespace, name))
        found = self.secrets.get((namespace, name))
        if found is None:
            raise LookupError("not found (or the relay may not read it)")
        keys = {}
        for key, value in (found.get("data") or {}).items():
            try:
                keys[str(key)] = base64.b64decode(str(value), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise LookupError(f"key {key!r} is not base64 of UTF-8 text") from None
        return keys


@dataclass(frozen=True, slots=True)
class Reading:
    """What the watched objects say about one Gateway."""

    settings: GatewaySettings | None
    error: GatewayError | None
    gateway: Raw | None  # the Gateway object as the API has it
    invalid: list[tuple[Raw, GatewayError]]  # objects that do not parse
    secrets_requested: set[tuple[str, str]]


def config_ref(flag: tuple[str, str] | None, namespace: str) -> tuple[str, str] | None:
    """``--gateway-config`` with its namespace filled in (the Gateway's)."""
    return None if flag is None else (flag[0] or namespace, flag[1])


def read_gateway(
    watches: Watches, key: tuple[str, str], gateway_config: tuple[str, str] | None
) -> Reading:
    """Parse what the watches hold and translate it for the Gateway ``key``."""
    objects, invalid = [], []
    for kind in (*GATEWAY_KINDS, "ReferenceGrant"):
        for raw in watches.objects(kind).values():
            try:
                objects.append(parse(raw, "default"))
            except GatewayError as exc:
                invalid.append((raw, exc))
    secrets = LiveSecrets(watches.objects("Secret"))
    gateway_raw = watches.objects("Gateway").get(key)
    own = [exc for raw, exc in invalid if raw is gateway_raw]
    settings: GatewaySettings | None = None
    error: GatewayError | None = own[0] if own else None
    if error is None:
        try:
            settings = translate(Catalog.of(objects), key, secrets, config=gateway_config)
        except GatewayError as exc:
            error = exc
    return Reading(settings, error, gateway_raw, invalid, secrets.requested)


def gateway_scopes(namespace: str) -> list[Scope]:
    """The fixed watches: the namespace's Gateways, and the rest cluster-wide."""
    kinds = ("GatewayClass", "UDPRoute", "GatewayConfig", "StaticService")
    return [Scope("Gateway", namespace), *(Scope(kind) for kind in kinds)]


class Follower:
    """Watches a Gateway's objects and runs :meth:`reconcile` after every change (one round
    at a time; changes during a round make one more)."""

    def __init__(self, apis: Apis, key: tuple[str, str], timing: WatchTiming) -> None:
        self.apis = apis
        self.key = key
        self.watches = Watches(apis, self._changed, timing=timing)
        self.reconciles = 0
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._logged: str | None = None

    async def start(self) -> None:
        """Start the watches and the loop that applies what they see."""
        for scope in gateway_scopes(self.key[0]):
            self.watches.start(scope)
        self._task = asyncio.create_task(self._run(), name=f"follow {self.key[0]}/{self.key[1]}")

    async def stop(self) -> None:
        await runtime.cancel_and_wait(self._task)
        self._task = None
        await self.watches.close()

    def _changed(self) -> None:
        self._dirty.set()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.reconcile()
            except Exception:  # one bad round must not stop the next
                log.exception("applying the gateway configuration failed")

    async def reconcile(self) -> None:
        raise NotImplementedError

    async def read(
        self, gateway_config: tuple[str, str] | None, *, certificates: bool = False
    ) -> Reading | None:
        """The objects translated (None until every fixed watch has listed once); the
        Secrets watched are those the translation asked for, and with ``certificates`` the
        listeners' certificate Secrets."""
        if not self.watches.synced(GATEWAY_KINDS):
            return None
        self.reconciles += 1
        reading = read_gateway(self.watches, self.key, config_ref(gateway_config, self.key[0]))
        wanted = set(reading.secrets_requested)
        grants: set[str] = set()
        if certificates and reading.settings is not None:
            for item in reading.settings.listeners:
                if item.certificate is not None:
                    wanted.add(item.certificate)
                    if item.certificate[0] != self.key[0]:
                        grants.add(item.certificate[0])  # a grant revoked must be seen
                elif item.ref_problem is not None and item.ref_problem.grant_namespace:
                    grants.add(item.ref_problem.grant_namespace)
        await self.watches.follow("Secret", (secret_scope(*key) for key in wanted))
        await self.watches.follow("ReferenceGrant", (Scope("ReferenceGrant", ns) for ns in grants))
        if reading.error is not None:
            self._log_once(
                "gateway configuration refused", str(reading.error), error=str(reading.error)
            )
        else:
            self._logged = None
        return reading

    def _log_once(self, event: str, what: str, **fields: Any) -> None:
        if what != self._logged:
            self._logged = what
            log.warning(event, gateway=f"{self.key[0]}/{self.key[1]}", **fields)


class LiveGateway(Follower):
    """Applies the Gateway API objects to ``server`` as they change (module docstring)."""

    def __init__(
        self,
        server: RelayServer,
        options: GatewayOptions,
        apis: Apis,
        *,
        timing: WatchTiming = DEFAULT_TIMING,
        clock: Callable[[], float] = time.time,
    ) -> None:
        reporting = server.config.reporting
        super().__init__(apis, (reporting.namespace, reporting.gateway), timing)
        self.server = server
        self.options = options
        self.clock = clock
        #: What is applied (None before the first good configuration).
        self.settings: GatewaySettings | None = None
        #: Why the objects are refused now, or None.
        self.error: GatewayError | None = None
        self.listen: list[Listen] = []
        self.listener_error: str | None = None
        #: The listener serving each Gateway listener now, by name.
        self.served: dict[str, Listen] = {}
        #: Why a listener's certificate is refused now, by name.
        self.ref_problems: dict[str, RefProblem] = {}
        #: Why a listener could not be opened now, by name.
        self.open_errors: dict[str, str] = {}
        self.certificate_store: CertificateStore | None = None
        self.rules: list[PeerRule] | None = None
        self._credentials: tuple[str, object] | None = None

    async def start(self) -> None:
        self.server.configured = False
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self.certificate_store is not None:
            self.certificate_store.close()
            self.certificate_store = None

    # -- one round

    async def reconcile(self) -> None:
        """Translate what the watches hold and apply it (nothing before they all listed)."""
        reading = await self.read(self.options.gateway_config, certificates=True)
        if reading is None:
            return
        settings = reading.settings
        self.error = reading.error
        if settings is not None:
            await self.watches.follow(
                "EndpointSlice", (endpoints_scope(b.namespace, b.name) for b in settings.services)
            )
            await self._apply(settings)
        await self._write_status(settings, reading.error, reading.gateway, reading.invalid)

    def _certificate(self, item: ListenerSettings) -> TlsFiles | RefProblem | None:
        """The files of a TLS/DTLS listener's Secret, why not, or None while its watch has
        not listed yet."""
        problem = item.ref_problem
        if problem is not None:
            grants = problem.grant_namespace
            if grants is not None and not self.watches.listed(Scope("ReferenceGrant", grants)):
                return None  # its grants are not known yet
            return problem
        assert item.certificate is not None, "a secure listener has a ref or a problem"
        if not self.watches.listed(secret_scope(*item.certificate)):
            return None
        if self.certificate_store is None:
            self.certificate_store = CertificateStore()
        secrets = LiveSecrets(self.watches.objects("Secret"))
        return self.certificate_store.install(secrets, item.certificate)

    def _listeners(self, settings: GatewaySettings) -> list[tuple[str, Listen]]:
        """The relay listener of each Gateway listener that can be served; a TLS one whose
        new certificate is refused keeps the one it serves."""
        host = self.options.listener_address
        problems: dict[str, RefProblem] = {}
        chosen: list[tuple[str, Listen]] = []
        for item in settings.listeners:
            certificate = None
            if item.secure:
                outcome = self._certificate(item)
                if not isinstance(outcome, TlsFiles):
                    if outcome is not None:
                        problems[item.name] = outcome
                    previous = self.served.get(item.name)
                    if previous is not None and previous == listen_of(
                        item, host, previous.certificate
                    ):
                        chosen.append((item.name, previous))
                    continue
                certificate = outcome
            chosen.append((item.name, listen_of(item, host, certificate)))
        for name, problem in problems.items():
            if self.ref_problems.get(name) != problem:
                log.warning("listener certificate refused", listener=name, error=problem.message)
        self.ref_problems = problems
        return chosen

    async def _apply(self, settings: GatewaySettings) -> None:
        server = self.server
        chosen = self._listeners(settings)
        listen = [item for _, item in chosen]
        if listen != self.listen or self.listener_error is not None:
            try:
                await server.set_listeners(listen)
                self.listener_error = None
            except StartupError as exc:
                self.listener_error = str(exc)
                log.warning("listener cannot be bound", error=str(exc))
            self.listen = listen
        errors = server.listener_errors
        self.open_errors = {name: errors[item] for name, item in chosen if item in errors}
        self.served = {name: item for name, item in chosen if item not in errors}
        if self.certificate_store is not None:
            self.certificate_store.retain(
                item.certificate
                for item in settings.listeners
                if item.name in self.served and item.certificate is not None
            )
        # A rewritten Secret applies to the next handshake, not the next poll.
        server.check_certificates()
        credentials = (settings.realm, settings.auth)
        if credentials != self._credentials:
            users, secrets, _ = relay_fields(settings)
            lifetime = (
                settings.auth.lifetime
                if isinstance(settings.auth, EphemeralAuth)
                else server.config.rest_max_lifetime
            )
            server.set_credentials(Credentials(settings.realm, users, secrets, max_ttl=lifetime))
            self._credentials = credentials
        peers = Peers(
            settings.static_peers,
            settings.services,
            allow_loopback=server.config.allow_loopback_peers,
        )
        slices = list(self.watches.objects("EndpointSlice").values())
        peers.update(
            {
                (b.namespace, b.name): endpoint_addresses(
                    [
                        s
                        for s in slices
                        if (s.get("metadata") or {}).get("namespace") == b.namespace
                    ],
                    b.name,
                )
                for b in settings.services
            }
        )
        rules = peers.rules()
        if rules != self.rules:
            server.set_peer_policy(peers.policy())
            self.rules = rules
        if settings != self.settings:
            log.info(
                "gateway configuration applied",
                gateway=f"{settings.namespace}/{settings.name}",
                gateway_config=f"{settings.config[0]}/{settings.config[1]}",
                listeners=[str(item) for item in server.listeners],
                routes=[f"{r.namespace}/{r.name}" for r in settings.routes if r.accepted],
                services=[b.dns_name for b in settings.services],
            )
        self.settings = settings
        server.configured = True

    # -- status

    async def _write_status(
        self,
        settings: GatewaySettings | None,
        error: GatewayError | None,
        gateway_raw: Raw | None,
        invalid: list[tuple[Raw, GatewayError]],
    ) -> None:
        now = self.clock()
        if gateway_raw is not None:
            if error is not None:
                reason = gateway_reason(error.reason)
                wanted = [
                    Condition("Accepted", False, reason, str(error)),
                    Condition("Programmed", False, "Invalid", "the configuration is refused"),
                ]
            else:
                programmed = (
                    Condition("Programmed", True, "Programmed", "every listener is bound")
                    if self.listener_error is None
                    else Condition("Programmed", False, "Invalid", self.listener_error)
                )
                accepted = (
                    Condition(
                        "Accepted",
                        True,
                        "ListenersNotValid",
                        "; ".join(
                            f"listener {name!r}: {p.message}"
                            for name, p in self.ref_problems.items()
                        ),
                    )
                    if self.ref_problems
                    else Condition("Accepted", True, "Accepted")
                )
                wanted = [accepted, programmed]
            listeners = (
                None if settings is None or error is not None else self._listener_status(settings)
            )
            await self._patch(
                "Gateway", gateway_raw, gateway_status(gateway_raw, wanted, now, listeners)
            )
        if settings is None:
            return
        controller = self._controller()
        routes = self.watches.objects("UDPRoute")
        for verdict in settings.routes:
            raw = routes.get((verdict.namespace, verdict.name))
            if raw is None:
                continue
            wanted = [
                Condition("Accepted", verdict.accepted, verdict.reason, verdict.message),
                Condition(
                    "ResolvedRefs",
                    verdict.resolved,
                    verdict.resolved_reason,
                    verdict.resolved_message,
                ),
            ]
            await self._patch("UDPRoute", raw, route_status(raw, self.key, wanted, now, controller))
        reported = {(v.namespace, v.name) for v in settings.routes}
        for raw, exc in invalid:
            if raw.get("kind") == "UDPRoute" and self._names_gateway(raw):
                wanted = [
                    Condition("Accepted", False, "UnsupportedValue", str(exc)),
                    Condition("ResolvedRefs", False, "UnsupportedValue", "the route is invalid"),
                ]
                await self._patch(
                    "UDPRoute", raw, route_status(raw, self.key, wanted, now, controller)
                )
                metadata = raw.get("metadata") or {}
                reported.add((str(metadata.get("namespace")), str(metadata.get("name"))))
        for key, raw in routes.items():
            if key not in reported:  # no longer attached: our parent entry goes
                detached = route_status_detached(raw, self.key, controller)
                if detached is not None:
                    await self._patch("UDPRoute", raw, detached)

    def _listener_status(self, settings: GatewaySettings) -> list[ListenerStatus]:
        """Each listener's conditions: its certificate resolved, and whether it serves."""
        out = []
        for item in settings.listeners:
            problem = self.ref_problems.get(item.name)
            resolved = (
                Condition("ResolvedRefs", False, problem.reason, problem.message)
                if problem is not None
                else Condition("ResolvedRefs", True, "ResolvedRefs")
            )
            serving = self.served.get(item.name)
            if problem is not None:
                still = (
                    "; the listener keeps serving its previous certificate"
                    if serving is not None
                    else "; the listener is not served"
                )
                programmed = Condition("Programmed", False, "Invalid", problem.message + still)
            elif item.name in self.open_errors:
                programmed = Condition("Programmed", False, "Invalid", self.open_errors[item.name])
            elif serving is None:
                programmed = Condition(
                    "Programmed", False, "Pending", "waiting for the certificate Secret"
                )
            else:
                programmed = Condition("Programmed", True, "Programmed")
            conditions = (Condition("Accepted", True, "Accepted"), resolved, programmed)
            out.append(ListenerStatus(item.name, conditions, item.attached_routes))
        return out

    def _controller(self) -> str:
        gateway = self.watches.objects("Gateway").get(self.key) or {}
        class_name = (gateway.get("spec") or {}).get("gatewayClassName")
        gateway_class = self.watches.objects("GatewayClass").get(("", str(class_name)))
        name = ((gateway_class or {}).get("spec") or {}).get("controllerName")
        return str(name) if name else DEFAULT_CONTROLLER

    def _names_gateway(self, route: Raw) -> bool:
        metadata = route.get("metadata") or {}
        refs = (route.get("spec") or {}).get("parentRefs") or []
        return any(
            isinstance(ref, dict)
            and ref.get("name") == self.key[1]
            and (ref.get("namespace") or metadata.get("namespace")) == self.key[0]
            and ref.get("group", GATEWAY_GROUP) == GATEWAY_GROUP
            for ref in refs
        )

    async def _patch(self, kind: str, raw: Raw, status: Raw) -> None:
        if unchanged(raw, status):
            return
        metadata = raw.get("metadata") or {}
        try:
            await self.apis.patch_status(kind, metadata["namespace"], metadata["name"], status)
        except Exception as exc:  # the API's trouble: the next change tries again
            log.warning("status not written", object=describe(raw), error=str(exc))
