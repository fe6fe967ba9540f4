"""From a set of checked Gateway API objects to what one relay runs with. Pure.

:func:`translate` takes a :class:`Catalog` (every object known: from files or a watch), the
relay's Gateway and a :class:`SecretSource`, and returns :class:`GatewaySettings`:

* listeners: the Gateway's listeners (name, transport, port, hostname). A ``TURN-TLS`` or
  ``TURN-DTLS`` listener names its certificate with the first of ``tls.certificateRefs``:
  a core ``Secret`` (group ``""``), in the Gateway's namespace unless the ref says
  another. A ref of another kind or group, or none, is the listener's
  ``InvalidCertificateRef``; one into another namespace is ``RefNotPermitted`` unless a
  ReferenceGrant there lets Gateways of the Gateway's namespace refer to that Secret.
  Either leaves that listener out and the others served (Gateway API
  ``ListenerConditionResolvedRefs``). The Secret itself is read by the relay
  (:mod:`relay.gateway.certificates`), not here: ``turnscale auth`` needs no key;
* credentials: the GatewayConfig chosen by ``--gateway-config``, else by the GatewayClass's
  ``parametersRef``, else the only GatewayConfig in the Gateway's namespace. Its realm, and
  ``static`` (alias ``plaintext``) user name and password or an ``ephemeral`` (aliases
  ``longterm``, ``timewindowed``) shared secret (``sharedSecret``, or ``password``) with
  ``authLifetime``; a value may be a Secret reference, and ``authRef`` names a Secret
  holding them all (STUNner's keys ``type``, ``username``, ``password``, ``secret``);
* peers: the backends of every UDPRoute attached to the Gateway (a ``parentRef`` naming it,
  through a listener whose ``allowedRoutes`` admit the route): StaticService prefixes as
  peer rules, Services as :class:`ServiceBackend` for the caller to resolve. Ports come
  from ``port``/``endPort``; without ``port`` every port is allowed.

A problem with the Gateway or its credentials raises :class:`GatewayError` (nothing
applies). A problem with one route is a :class:`RouteVerdict` in the settings: a route
that is not accepted contributes nothing, a backend that cannot be resolved is left out;
file mode refuses both, live mode reports them in the route's status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from relay.core.peer_policy import PeerRule
from relay.gateway.objects import (
    AUTH_TYPES,
    DEFAULT_AUTH_LIFETIME,
    GATEWAY_GROUP,
    SECURE,
    Gateway,
    GatewayClass,
    GatewayConfig,
    GatewayError,
    GatewayObject,
    Listener,
    ParentRef,
    ReferenceGrant,
    SecretRef,
    StaticService,
    UDPRoute,
)

__all__ = [
    "Catalog",
    "EphemeralAuth",
    "GatewaySettings",
    "ListenerSettings",
    "RefProblem",
    "RouteVerdict",
    "SecretSource",
    "ServiceBackend",
    "StaticAuth",
    "translate",
]

Key = tuple[str, str]  # (namespace, name)


class SecretSource(Protocol):
    """Where Secret references are read: mounted files, or Secrets watched in the API."""

    def secret(self, namespace: str, name: str) -> Mapping[str, str]:
        """The Secret's keys and values; raise LookupError with a message saying why not."""
        ...


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every object known, by kind and ``(namespace, name)`` (GatewayClass: ``("", name)``)."""

    gateways: Mapping[Key, Gateway] = field(default_factory=dict)
    classes: Mapping[Key, GatewayClass] = field(default_factory=dict)
    routes: Mapping[Key, UDPRoute] = field(default_factory=dict)
    configs: Mapping[Key, GatewayConfig] = field(default_factory=dict)
    static_services: Mapping[Key, StaticService] = field(default_factory=dict)
    grants: Mapping[Key, ReferenceGrant] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: Iterable[GatewayObject]) -> Catalog:
        """A catalog of ``objects``; the same kind, namespace and name twice is an error."""
        tables: dict[type, dict[Key, GatewayObject]] = {
            Gateway: {},
            GatewayClass: {},
            UDPRoute: {},
            GatewayConfig: {},
            StaticService: {},
            ReferenceGrant: {},
        }
        for obj in objects:
            key = (obj.metadata.namespace, obj.metadata.name)
            table = tables[type(obj)]
            if key in table:
                raise GatewayError(f"{describe(obj)}: given twice", "Conflicted")
            table[key] = obj
        return cls(
            gateways=tables[Gateway],  # type: ignore[arg-type]
            classes=tables[GatewayClass],  # type: ignore[arg-type]
            routes=tables[UDPRoute],  # type: ignore[arg-type]
            configs=tables[GatewayConfig],  # type: ignore[arg-type]
            static_services=tables[StaticService],  # type: ignore[arg-type]
            grants=tables[ReferenceGrant],  # type: ignore[arg-type]
        )

    def grants_in(self, namespace: str) -> list[ReferenceGrant]:
        return [grant for (ns, _), grant in sorted(self.grants.items()) if ns == namespace]


def describe(obj: GatewayObject) -> str:
    """``Kind namespace/name`` (``GatewayClass name``)."""
    metadata = obj.metadata
    kind = type(obj).__name__
    return (
        f"{kind} {metadata.namespace}/{metadata.name}"
        if metadata.namespace
        else (f"{kind} {metadata.name}")
    )


#: Gateway API reasons of a listener's ``ResolvedRefs`` False.
INVALID_CERTIFICATE_REF: Final = "InvalidCertificateRef"
REF_NOT_PERMITTED: Final = "RefNotPermitted"


@dataclass(frozen=True, slots=True)
class RefProblem:
    """Why a listener's certificate cannot be used: its ``ResolvedRefs`` False (the
    message names the ref or Secret; the caller names the listener)."""

    reason: str  # InvalidCertificateRef, RefNotPermitted
    message: str
    #: RefNotPermitted: the namespace whose ReferenceGrants were asked (and found wanting).
    grant_namespace: str | None = None


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    name: str
    transport: str  # udp, tcp, tls, dtls
    port: int
    #: The listener's ``hostname`` (a DNS name, maybe ``*.``-wildcarded), if given.
    hostname: str | None = None
    #: tls/dtls: the ``(namespace, name)`` of the Secret holding ``tls.crt`` and ``tls.key``.
    certificate: Key | None = None
    #: tls/dtls: why the certificate reference is refused (then ``certificate`` is None).
    ref_problem: RefProblem | None = None
    #: Accepted routes attached through this listener (its ``status.attachedRoutes``).
    attached_routes: int = 0

    @property
    def secure(self) -> bool:
        return self.transport in SECURE


@dataclass(frozen=True, slots=True)
class StaticAuth:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class EphemeralAuth:
    secret: str = field(repr=False)
    lifetime: int = DEFAULT_AUTH_LIFETIME
    #: The user id of minted credentials when none is asked for (``userName``).
    user_id: str | None = None


@dataclass(frozen=True, slots=True, order=True)
class ServiceBackend:
    """A routed Service: its peers are its addresses, on ``port_min..port_max``."""

    namespace: str
    name: str
    port_min: int = 0
    port_max: int = 0xFFFF

    @property
    def dns_name(self) -> str:
        return f"{self.name}.{self.namespace}.svc"

    def rules(self, addresses: Iterable[str]) -> list[PeerRule]:
        """One peer rule per address (a host network) with this backend's ports."""
        from ipaddress import ip_network

        return [PeerRule(ip_network(a), self.port_min, self.port_max) for a in sorted(addresses)]


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    """What happened to one UDPRoute attached to the Gateway (its status conditions)."""

    namespace: str
    name: str
    generation: int
    accepted: bool
    reason: str  # Accepted, NotAllowedByListeners, NoMatchingParent, ...
    message: str = ""
    resolved: bool = True
    resolved_reason: str = "ResolvedRefs"
    resolved_message: str = ""

    @property
    def problem(self) -> str | None:
        """Why the route is not wholly in force, or None."""
        if not self.accepted:
            return self.message
        return None if self.resolved else self.resolved_message


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the Gateway API objects say about one relay."""

    namespace: str
    name: str
    generation: int
    config: Key  # the GatewayConfig used
    listeners: tuple[ListenerSettings, ...]
    realm: str
    auth: StaticAuth | EphemeralAuth
    static_peers: tuple[PeerRule, ...]
    services: tuple[ServiceBackend, ...]
    addresses: tuple[str, ...] = ()
    routes: tuple[RouteVerdict, ...] = ()

    @property
    def problems(self) -> list[str]:
        """Every route problem (file mode refuses to start with any)."""
        return [v.problem for v in self.routes if v.problem is not None]


SECRET_KEYS: Final = ("secret", "sharedSecret")


def translate(
    catalog: Catalog,
    gateway: Key,
    secrets: SecretSource,
    *,
    config: Key | None = None,
) -> GatewaySettings:
    """The settings of the Gateway ``gateway`` (see the module docstring)."""
    found = catalog.gateways.get(gateway)
    if found is None:
        raise GatewayError(f"Gateway {gateway[0]}/{gateway[1]}: not found", "NotFound")
    chosen = _gateway_config(catalog, found, config)
    realm = chosen.spec.realm
    auth = _auth(chosen, secrets)
    verdicts: list[RouteVerdict] = []
    static: list[PeerRule] = []
    services: set[ServiceBackend] = set()
    for key in sorted(catalog.routes):
        route = catalog.routes[key]
        verdict = _attach(found, route)
        if verdict is None:
            continue  # not for this Gateway
        if verdict.accepted:
            missing: list[str] = []
            for rule_index, rule in enumerate(route.spec.rules):
                for index, backend in enumerate(rule.backend_refs):
                    namespace = backend.namespace or route.metadata.namespace
                    port_min, port_max = backend.ports
                    if not backend.is_static:
                        services.add(ServiceBackend(namespace, backend.name, port_min, port_max))
                        continue
                    target = catalog.static_services.get((namespace, backend.name))
                    if target is None:
                        missing.append(
                            f"{describe(route)}: spec.rules[{rule_index}].backendRefs[{index}]: "
                            f"StaticService {namespace}/{backend.name} not found"
                        )
                        continue
                    static.extend(PeerRule(n, port_min, port_max) for n in target.networks())
            if missing:
                verdict = _replace(
                    verdict,
                    resolved=False,
                    resolved_reason="BackendNotFound",
                    resolved_message="; ".join(missing),
                )
        verdicts.append(verdict)
    addresses = tuple(a.value for a in found.spec.addresses)
    accepted = [catalog.routes[(v.namespace, v.name)] for v in verdicts if v.accepted]
    return GatewaySettings(
        namespace=gateway[0],
        name=gateway[1],
        generation=found.metadata.generation,
        config=(chosen.metadata.namespace, chosen.metadata.name),
        listeners=tuple(_listener(found, item, accepted, catalog) for item in found.spec.listeners),
        realm=realm,
        auth=auth,
        static_peers=tuple(dict.fromkeys(static)),
        services=tuple(sorted(services)),
        addresses=addresses,
        routes=tuple(verdicts),
    )


def _listener(
    gateway: Gateway, item: Listener, routes: list[UDPRoute], catalog: Catalog
) -> ListenerSettings:
    """One listener's settings: its certificate reference checked, its routes counted."""
    attached = sum(1 for route in routes if _through(gateway, item, route))
    settings = ListenerSettings(
        item.name, item.transport, item.port, item.hostname, attached_routes=attached
    )
    if item.transport not in SECURE:
        return settings
    from dataclasses import replace

    namespace = gateway.metadata.namespace
    refs = item.tls.certificate_refs if item.tls is not None else ()
    if not refs:
        problem = RefProblem(
            INVALID_CERTIFICATE_REF,
            f"{item.protocol} needs tls.certificateRefs (a kubernetes.io/tls Secret)",
        )
        return replace(settings, ref_problem=problem)
    ref = refs[0]  # the first one (Gateway API: one per certificate type is enough)
    if (ref.group, ref.kind) != ("", "Secret"):
        problem = RefProblem(
            INVALID_CERTIFICATE_REF,
            f"tls.certificateRefs[0]: {ref.kind} (group {ref.group!r}) is not a Secret (group '')",
        )
        return replace(settings, ref_problem=problem)
    target = ref.namespace or namespace
    origin = (GATEWAY_GROUP, "Gateway", namespace)
    if target != namespace and not any(
        grant.permits(origin, ("", "Secret", ref.name)) for grant in catalog.grants_in(target)
    ):
        problem = RefProblem(
            REF_NOT_PERMITTED,
            f"tls.certificateRefs[0]: Secret {target}/{ref.name} is in another namespace "
            f"and no ReferenceGrant in {target} lets Gateways of {namespace} refer to it",
            grant_namespace=target,
        )
        return replace(settings, ref_problem=problem)
    return replace(settings, certificate=(target, ref.name))


def _through(gateway: Gateway, item: Listener, route: UDPRoute) -> bool:
    """Whether the accepted ``route`` attaches through the listener ``item``."""
    return any(
        _names(gateway, ref, route)
        and (ref.section_name is None or ref.section_name == item.name)
        and (ref.port is None or ref.port == item.port)
        and item.admits(route.metadata.namespace, gateway.metadata.namespace)
        for ref in route.spec.parent_refs
    )


def _names(gateway: Gateway, ref: ParentRef, route: UDPRoute) -> bool:
    return (
        ref.group == GATEWAY_GROUP
        and ref.kind == "Gateway"
        and ref.name == gateway.metadata.name
        and (ref.namespace or route.metadata.namespace) == gateway.metadata.namespace
    )


def _replace(verdict: RouteVerdict, **changes: object) -> RouteVerdict:
    from dataclasses import replace

    return replace(verdict, **changes)  # type: ignore[arg-type]


def _gateway_config(catalog: Catalog, gateway: Gateway, config: Key | None) -> GatewayConfig:
    where = describe(gateway)
    if config is not None:
        chosen = catalog.configs.get(config)
        if chosen is None:
            raise GatewayError(
                f"{where}: GatewayConfig {config[0]}/{config[1]} (--gateway-config) not found",
                "InvalidParameters",
            )
        return chosen
    class_name = gateway.spec.gateway_class_name
    gateway_class = catalog.classes.get(("", class_name))
    if gateway_class is not None and gateway_class.spec.parameters_ref is not None:
        ref = gateway_class.spec.parameters_ref
        key = (ref.namespace or "", ref.name)
        chosen = catalog.configs.get(key)
        if chosen is None:
            raise GatewayError(
                f"GatewayClass {class_name}: spec.parametersRef: GatewayConfig {key[0]}/{key[1]} "
                "not found",
                "InvalidParameters",
            )
        return chosen
    namespace = gateway.metadata.namespace
    local = [c for (ns, _), c in sorted(catalog.configs.items()) if ns == namespace]
    if len(local) == 1:
        return local[0]
    if not local:
        raise GatewayError(
            f"{where}: no GatewayConfig: none in namespace {namespace} and GatewayClass "
            f"{class_name} names none (spec.parametersRef)",
            "InvalidParameters",
        )
    names = ", ".join(c.metadata.name for c in local)
    raise GatewayError(
        f"{where}: several GatewayConfigs in namespace {namespace} ({names}) and GatewayClass "
        f"{class_name} names none: give its spec.parametersRef or --gateway-config",
        "InvalidParameters",
    )


def _read(
    secrets: SecretSource, where: str, field: str, namespace: str, name: str
) -> Mapping[str, str]:
    try:
        return secrets.secret(namespace, name)
    except LookupError as exc:
        raise GatewayError(
            f"{where}: {field}: Secret {namespace}/{name}: {exc.args[0] if exc.args else exc}",
            "InvalidParameters",
        ) from None


def _value(
    secrets: SecretSource,
    config: GatewayConfig,
    field: str,
    value: str | SecretRef | None,
    default_key: str,
) -> str:
    where = describe(config)
    if isinstance(value, str):
        return value
    assert value is not None, "checked by objects.parse"
    namespace = value.namespace or config.metadata.namespace
    keys = _read(secrets, where, field, namespace, value.name)
    key = value.key or default_key
    found = keys.get(key)
    if not found:
        raise GatewayError(
            f"{where}: {field}: Secret {namespace}/{value.name} has no key {key!r}"
            + (" (or it is empty)" if key in keys else ""),
            "InvalidParameters",
        )
    return found


def _auth(config: GatewayConfig, secrets: SecretSource) -> StaticAuth | EphemeralAuth:
    spec = config.spec
    where = describe(config)
    lifetime = spec.auth_lifetime or DEFAULT_AUTH_LIFETIME
    if spec.auth_ref is not None:
        ref = spec.auth_ref
        namespace = ref.namespace or config.metadata.namespace
        keys = _read(secrets, where, "spec.authRef", namespace, ref.name)
        type_name = keys.get("type", spec.auth_type).strip().lower()
        kind = AUTH_TYPES.get(type_name)
        secret_where = f"{where}: spec.authRef: Secret {namespace}/{ref.name}"
        if kind is None:
            raise GatewayError(
                f"{secret_where}: type {type_name!r} is not one of {', '.join(AUTH_TYPES)}",
                "InvalidParameters",
            )
        if kind == "static":
            username, password = keys.get("username"), keys.get("password")
            if not username or not password:
                raise GatewayError(
                    f"{secret_where}: type {type_name} needs keys 'username' and 'password'",
                    "InvalidParameters",
                )
            return StaticAuth(username, password)
        secret = next((keys[k] for k in SECRET_KEYS if keys.get(k)), None)
        if secret is None:
            raise GatewayError(
                f"{secret_where}: type {type_name} needs key 'secret' (or 'sharedSecret')",
                "InvalidParameters",
            )
        return EphemeralAuth(secret, lifetime)
    if config.auth == "static":
        assert spec.user_name is not None, "checked by objects.parse"
        password = _value(secrets, config, "spec.password", spec.password, "password")
        return StaticAuth(spec.user_name, password)
    if spec.password is not None:
        secret = _value(secrets, config, "spec.password", spec.password, "password")
    else:
        secret = _value(secrets, config, "spec.sharedSecret", spec.shared_secret, "secret")
    return EphemeralAuth(secret, lifetime, spec.user_name)


def _attach(gateway: Gateway, route: UDPRoute) -> RouteVerdict | None:
    """Whether ``route`` attaches to ``gateway``: None when no parentRef names it."""
    gw_namespace, gw_name = gateway.metadata.namespace, gateway.metadata.name
    route_namespace = route.metadata.namespace
    refs = [ref for ref in route.spec.parent_refs if _names(gateway, ref, route)]
    if not refs:
        return None
    metadata = route.metadata
    where = describe(route)
    reason, message = "NoMatchingParent", ""
    for ref in refs:
        listeners = [
            item
            for item in gateway.spec.listeners
            if (ref.section_name is None or item.name == ref.section_name)
            and (ref.port is None or item.port == ref.port)
        ]
        if not listeners:
            message = (
                f"{where}: spec.parentRefs: Gateway {gw_namespace}/{gw_name} has no listener "
                + (f"named {ref.section_name!r}" if ref.section_name else f"on port {ref.port}")
            )
            continue
        if any(item.admits(route_namespace, gw_namespace) for item in listeners):
            return RouteVerdict(
                metadata.namespace, metadata.name, metadata.generation, True, "Accepted"
            )
        reason = "NotAllowedByListeners"
        message = (
            f"{where}: the listeners of Gateway {gw_namespace}/{gw_name} do not admit it "
            "(allowedRoutes: namespaces or kinds)"
        )
    return RouteVerdict(
        metadata.namespace, metadata.name, metadata.generation, False, reason, message
    )
