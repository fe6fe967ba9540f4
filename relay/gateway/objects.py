"""Gateway API objects as turnscale reads them: parsing and the checks one object allows.

:func:`parse` takes one decoded document (a Kubernetes object as a dict) and returns a
frozen, checked value: :class:`Gateway`, :class:`GatewayClass`, :class:`ReferenceGrant`
(``gateway.networking.k8s.io``), :class:`UDPRoute`, :class:`GatewayConfig` or
:class:`StaticService` (``stunner.l7mp.io/v1``, STUNner's shapes). Anything wrong is a
:class:`GatewayError` whose message names the object (``Kind namespace/name``) and the
field (``spec.listeners[1].protocol``). Fields turnscale does not use are ignored, so
STUNner's objects load unchanged. Pure: no I/O.

Checks that need other objects (does the route's Gateway exist, which GatewayConfig, the
Secret's contents) are :mod:`relay.gateway.translate`'s.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from relay.core.credentials import check_realm
from relay.core.peer_policy import PeerRule
from scaler.common.names import is_dns_label, is_dns_subdomain

__all__ = [
    "GATEWAY_GROUP",
    "STUNNER_GROUP",
    "BackendRef",
    "CertificateRef",
    "Gateway",
    "GatewayClass",
    "GatewayConfig",
    "GatewayError",
    "GatewayObject",
    "Listener",
    "ParentRef",
    "ReferenceGrant",
    "SecretRef",
    "StaticService",
    "UDPRoute",
    "parse",
]

GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
STUNNER_GROUP: Final = "stunner.l7mp.io"

#: What the relay serves, by Gateway listener protocol; STUNner also takes the bare
#: transport names (``UDP``, ``TCP``, ``TLS``, ``DTLS``) for the TURN ones.
TRANSPORTS: Final = {
    "TURN-UDP": "udp",
    "TURN-TCP": "tcp",
    "TURN-TLS": "tls",
    "TURN-DTLS": "dtls",
    "UDP": "udp",
    "TCP": "tcp",
    "TLS": "tls",
    "DTLS": "dtls",
}
#: Transports whose listeners terminate (D)TLS with a certificate of ``tls.certificateRefs``.
SECURE: Final = ("tls", "dtls")
#: The socket each transport binds.
SOCKETS: Final = {"udp": "udp", "tcp": "tcp", "tls": "tcp", "dtls": "udp"}
#: ``authType`` and its aliases (STUNner's names).
AUTH_TYPES: Final = {
    "static": "static",
    "plaintext": "static",
    "ephemeral": "ephemeral",
    "longterm": "ephemeral",
    "timewindowed": "ephemeral",
}
DEFAULT_REALM: Final = "stunner.l7mp.io"
DEFAULT_AUTH_LIFETIME: Final = 86400
MAX_AUTH_LIFETIME: Final = 0x7FFFFFFF
REALM_PATTERN: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
USERNAME_PATTERN: Final = r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+"


class GatewayError(ValueError):
    """An object is invalid, or contradicts another: the message names object and field.

    ``reason`` is the Gateway API condition reason a status would carry."""

    def __init__(self, message: str, reason: str = "Invalid") -> None:
        super().__init__(message)
        self.reason = reason


class _Spec(msgspec.Struct, frozen=True, rename="camel"):
    """Field names as the API spells them (camelCase); unknown fields are ignored."""


class Metadata(_Spec, frozen=True):
    name: str = ""
    namespace: str = ""
    generation: int = 0
    resource_version: str = ""


# ---- gateway.networking.k8s.io ------------------------------------------------------------


class RouteKind(_Spec, frozen=True):
    kind: str
    group: str = GATEWAY_GROUP


class AllowedNamespaces(_Spec, frozen=True):
    from_: str = msgspec.field(name="from", default="Same")


class AllowedRoutes(_Spec, frozen=True):
    namespaces: AllowedNamespaces = AllowedNamespaces()
    kinds: tuple[RouteKind, ...] = ()


class CertificateRef(_Spec, frozen=True):
    """A listener's ``tls.certificateRefs`` entry (Gateway API ``SecretObjectReference``):
    group and kind are checked by :mod:`relay.gateway.translate`, which reports a wrong one
    on the listener (``InvalidCertificateRef``) rather than refusing the Gateway."""

    name: str
    group: str = ""
    kind: str = "Secret"
    namespace: str | None = None


class ListenerTls(_Spec, frozen=True):
    mode: str = "Terminate"
    certificate_refs: tuple[CertificateRef, ...] = ()


class Listener(_Spec, frozen=True):
    name: str
    port: int
    protocol: str
    allowed_routes: AllowedRoutes = AllowedRoutes()
    hostname: str | None = None
    tls: ListenerTls | None = None

    @property
    def transport(self) -> str:
        """``udp``, ``tcp``, ``tls`` or ``dtls`` (checked by :func:`parse`)."""
        return TRANSPORTS[self.protocol]

    def admits(self, route_namespace: str, gateway_namespace: str) -> bool:
        """Whether a UDPRoute in ``route_namespace`` may attach to this listener."""
        kinds = self.allowed_routes.kinds
        if kinds and not any(
            k.kind == "UDPRoute" and k.group in (STUNNER_GROUP, GATEWAY_GROUP) for k in kinds
        ):
            return False
        where = self.allowed_routes.namespaces.from_
        return where == "All" or route_namespace == gateway_namespace


class GrantFrom(_Spec, frozen=True):
    group: str
    kind: str
    namespace: str


class GrantTo(_Spec, frozen=True):
    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(_Spec, frozen=True):
    from_: tuple[GrantFrom, ...] = msgspec.field(name="from")
    to: tuple[GrantTo, ...]


class ReferenceGrant(_Spec, frozen=True):
    """Lets objects of other namespaces refer to objects of this one (Gateway API)."""

    metadata: Metadata
    spec: ReferenceGrantSpec

    def permits(self, origin: tuple[str, str, str], target: tuple[str, str, str]) -> bool:
        """Whether ``origin`` ``(group, kind, namespace)`` may refer to ``target``
        ``(group, kind, name)`` in this grant's namespace."""
        return any((f.group, f.kind, f.namespace) == origin for f in self.spec.from_) and any(
            (t.group, t.kind) == target[:2] and t.name in (None, target[2]) for t in self.spec.to
        )


class GatewayAddress(_Spec, frozen=True):
    value: str
    type: str = "IPAddress"


class GatewaySpec(_Spec, frozen=True):
    gateway_class_name: str
    listeners: tuple[Listener, ...]
    addresses: tuple[GatewayAddress, ...] = ()


class Gateway(_Spec, frozen=True):
    metadata: Metadata
    spec: GatewaySpec


class ParametersRef(_Spec, frozen=True):
    group: str
    kind: str
    name: str
    namespace: str | None = None


class GatewayClassSpec(_Spec, frozen=True):
    controller_name: str
    parameters_ref: ParametersRef | None = None


class GatewayClass(_Spec, frozen=True):
    metadata: Metadata
    spec: GatewayClassSpec


# ---- stunner.l7mp.io ----------------------------------------------------------------------


class ParentRef(_Spec, frozen=True):
    name: str
    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = None


class BackendRef(_Spec, frozen=True):
    name: str
    group: str = ""
    kind: str = "Service"
    namespace: str | None = None
    port: int | None = None
    end_port: int | None = None

    @property
    def ports(self) -> tuple[int, int]:
        """The inclusive port range: every port without ``port``, one without ``endPort``."""
        if self.port is None:
            return 0, 0xFFFF
        return self.port, self.port if self.end_port is None else self.end_port

    @property
    def is_static(self) -> bool:
        return self.kind == "StaticService"


class UDPRouteRule(_Spec, frozen=True):
    backend_refs: tuple[BackendRef, ...] = ()


class UDPRouteSpec(_Spec, frozen=True):
    rules: tuple[UDPRouteRule, ...]
    parent_refs: tuple[ParentRef, ...] = ()


class UDPRoute(_Spec, frozen=True):
    metadata: Metadata
    spec: UDPRouteSpec


class SecretRef(_Spec, frozen=True):
    name: str
    namespace: str | None = None
    key: str | None = None
    group: str = ""
    kind: str = "Secret"


class GatewayConfigSpec(_Spec, frozen=True):
    realm: str = DEFAULT_REALM
    auth_type: str = "plaintext"
    user_name: str | None = None
    password: str | SecretRef | None = None
    shared_secret: str | SecretRef | None = None
    auth_lifetime: int | None = None
    auth_ref: SecretRef | None = None

    def __repr__(self) -> str:  # inline passwords and secrets stay out of logs
        return (
            f"GatewayConfigSpec(realm={self.realm!r}, auth_type={self.auth_type!r}, "
            f"user_name={self.user_name!r}, auth_lifetime={self.auth_lifetime!r}, "
            "credentials=<hidden>)"
        )


class GatewayConfig(_Spec, frozen=True):
    metadata: Metadata
    spec: GatewayConfigSpec

    @property
    def auth(self) -> str:
        """``static`` or ``ephemeral`` (aliases resolved)."""
        return AUTH_TYPES[self.spec.auth_type.lower()]


class StaticServiceSpec(_Spec, frozen=True):
    prefixes: tuple[str, ...]


class StaticService(_Spec, frozen=True):
    metadata: Metadata
    spec: StaticServiceSpec

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The prefixes as networks (checked by :func:`parse`)."""
        return tuple(ipaddress.ip_network(p) for p in self.spec.prefixes)


GatewayObject = Gateway | GatewayClass | UDPRoute | GatewayConfig | StaticService | ReferenceGrant


@dataclass(frozen=True, slots=True)
class _Kind:
    type: type[Any]
    versions: tuple[str, ...]
    namespaced: bool = True


KINDS: Final[dict[str, _Kind]] = {
    "Gateway": _Kind(Gateway, (f"{GATEWAY_GROUP}/v1", f"{GATEWAY_GROUP}/v1beta1")),
    "GatewayClass": _Kind(
        GatewayClass, (f"{GATEWAY_GROUP}/v1", f"{GATEWAY_GROUP}/v1beta1"), namespaced=False
    ),
    "UDPRoute": _Kind(UDPRoute, (f"{STUNNER_GROUP}/v1", f"{GATEWAY_GROUP}/v1alpha2")),
    "GatewayConfig": _Kind(GatewayConfig, (f"{STUNNER_GROUP}/v1",)),
    "StaticService": _Kind(StaticService, (f"{STUNNER_GROUP}/v1",)),
    "ReferenceGrant": _Kind(
        ReferenceGrant,
        (f"{GATEWAY_GROUP}/v1beta1", f"{GATEWAY_GROUP}/v1", f"{GATEWAY_GROUP}/v1alpha2"),
    ),
}
_PATH: Final = re.compile(r"^(.*) - at `\$\.?(.*)`$")


def describe(document: Any) -> str:
    """``Kind namespace/name`` of a document, as far as it can be told."""
    if not isinstance(document, dict):
        return "a document that is not an object"
    kind = document.get("kind") or "an object without kind"
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        return str(kind)
    name, namespace = metadata.get("name"), metadata.get("namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def parse(document: Any, default_namespace: str) -> GatewayObject:
    """Check and convert one object; ``default_namespace`` fills a missing namespace.

    Raises :class:`GatewayError` naming the object and field."""
    if not isinstance(document, dict):
        raise GatewayError(f"{describe(document)}: expected a Kubernetes object (a mapping)")
    kind_name, version = document.get("kind"), document.get("apiVersion")
    kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise GatewayError(
            f"{describe(document)}: kind {kind_name!r} ({version}) is not one turnscale reads "
            f"({', '.join(KINDS)})",
            "InvalidKind",
        )
    if version not in kind.versions:
        raise GatewayError(
            f"{describe(document)}: apiVersion {version!r} is not {' or '.join(kind.versions)}",
            "InvalidKind",
        )
    try:
        obj = msgspec.convert(document, kind.type)
    except msgspec.ValidationError as exc:
        match = _PATH.match(str(exc))
        problem, field = (match.group(1), match.group(2)) if match else (str(exc), "")
        where = f"{describe(document)}: {field}: " if field else f"{describe(document)}: "
        raise GatewayError(f"{where}{problem}", "UnsupportedValue") from None
    metadata = obj.metadata
    what = str(kind_name)
    _name(f"{what} {metadata.name!r}: metadata.name", metadata.name, is_dns_subdomain)
    if kind.namespaced:
        namespace = metadata.namespace or default_namespace
        _name(f"{what} {metadata.name}: metadata.namespace", namespace, is_dns_label)
        obj = msgspec.structs.replace(
            obj, metadata=msgspec.structs.replace(metadata, namespace=namespace)
        )
        where = f"{what} {namespace}/{metadata.name}"
    else:
        where = f"{what} {metadata.name}"
    _CHECKS[type(obj)](obj, where)
    result: GatewayObject = obj
    return result


def _fail(where: str, field: str, problem: str, reason: str = "UnsupportedValue") -> GatewayError:
    return GatewayError(f"{where}: {field}: {problem}", reason)


def _name(where: str, value: str, valid: Callable[[str], bool]) -> None:
    if not value:
        raise GatewayError(f"{where} is missing", "UnsupportedValue")
    if not valid(value):
        raise GatewayError(
            f"{where}: {value!r} is not a Kubernetes name (lowercase letters, digits, '-')",
            "UnsupportedValue",
        )


def _port(where: str, field: str, value: int | None) -> None:
    if value is not None and not 1 <= value <= 0xFFFF:
        raise _fail(where, field, f"port {value} is outside 1..65535")


def _check_gateway(gateway: Gateway, where: str) -> None:
    spec = gateway.spec
    if not spec.gateway_class_name:
        raise _fail(where, "spec.gatewayClassName", "is empty")
    if not spec.listeners:
        raise _fail(where, "spec.listeners", "no listener", "ListenersNotValid")
    names: set[str] = set()
    bound: dict[tuple[str, int], str] = {}
    for index, listener in enumerate(spec.listeners):
        field = f"spec.listeners[{index}]"
        if not is_dns_label(listener.name):
            raise _fail(where, f"{field}.name", f"{listener.name!r} is not a section name")
        if listener.name in names:
            raise _fail(
                where, f"{field}.name", f"listener {listener.name!r} is given twice", "Conflicted"
            )
        names.add(listener.name)
        protocol = listener.protocol
        if protocol not in TRANSPORTS:
            raise _fail(
                where,
                f"{field}.protocol",
                f"{protocol!r} is not a TURN listener protocol (TURN-UDP, TURN-TCP, TURN-TLS, "
                "TURN-DTLS)",
                "UnsupportedProtocol",
            )
        _check_listener_tls(where, field, listener)
        if not 1 <= listener.port <= 0xFFFF:
            raise _fail(where, f"{field}.port", f"port {listener.port} is outside 1..65535")
        # TLS runs over a TCP socket and DTLS over a UDP one: they share those ports.
        key = (SOCKETS[listener.transport], listener.port)
        if key in bound:
            raise _fail(
                where,
                f"{field}.port",
                f"{key[0].upper()} port {listener.port} is taken by listener {bound[key]!r}",
                "Conflicted",
            )
        bound[key] = listener.name
        origin = listener.allowed_routes.namespaces.from_
        if origin not in ("Same", "All"):
            raise _fail(
                where,
                f"{field}.allowedRoutes.namespaces.from",
                f"{origin!r} is not supported (Same or All)",
            )
    for index, address in enumerate(spec.addresses):
        field = f"spec.addresses[{index}]"
        if address.type == "IPAddress":
            try:
                ipaddress.ip_address(address.value)
            except ValueError:
                raise _fail(
                    where, f"{field}.value", f"{address.value!r} is not an IP address"
                ) from None
        elif address.type == "Hostname":
            if not is_dns_subdomain(address.value):
                raise _fail(where, f"{field}.value", f"{address.value!r} is not a host name")
        else:
            raise _fail(
                where,
                f"{field}.type",
                f"{address.type!r} is not IPAddress or Hostname",
                "UnsupportedAddress",
            )


def _check_listener_tls(where: str, field: str, listener: Listener) -> None:
    """``tls`` belongs to TURN-TLS/TURN-DTLS listeners, which terminate (D)TLS themselves
    (RFC 8656 §3.1): ``Passthrough`` has nothing behind it to pass to. A missing or wrong
    certificate reference is the listener's status (:mod:`relay.gateway.translate`)."""
    if listener.hostname is not None and not _hostname(listener.hostname):
        raise _fail(where, f"{field}.hostname", f"{listener.hostname!r} is not a host name")
    tls = listener.tls
    if tls is None:
        return
    if listener.transport not in SECURE:
        raise _fail(
            where, f"{field}.tls", f"is for TURN-TLS and TURN-DTLS, not {listener.protocol}"
        )
    if tls.mode != "Terminate":
        raise _fail(
            where,
            f"{field}.tls.mode",
            f"{tls.mode!r} is not supported (a TURN relay terminates TLS: Terminate)",
        )
    for index, ref in enumerate(tls.certificate_refs):
        ref_field = f"{field}.tls.certificateRefs[{index}]"
        _name(f"{where}: {ref_field}.name", ref.name, is_dns_subdomain)
        if ref.namespace is not None:
            _name(f"{where}: {ref_field}.namespace", ref.namespace, is_dns_label)


def _hostname(value: str) -> bool:
    """A Gateway listener hostname: a DNS name, or one with a leading ``*.`` label."""
    name = value[2:] if value.startswith("*.") else value
    return is_dns_subdomain(name) and "." in value and not _is_ip(value)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_class(gateway_class: GatewayClass, where: str) -> None:
    ref = gateway_class.spec.parameters_ref
    if ref is None:
        return
    if (ref.group, ref.kind) != (STUNNER_GROUP, "GatewayConfig"):
        raise _fail(
            where,
            "spec.parametersRef",
            f"{ref.kind} ({ref.group}) is not a GatewayConfig ({STUNNER_GROUP})",
            "InvalidParameters",
        )
    if not ref.namespace:
        raise _fail(
            where,
            "spec.parametersRef.namespace",
            "is required (a GatewayConfig is namespaced)",
            "InvalidParameters",
        )


def _check_route(route: UDPRoute, where: str) -> None:
    spec = route.spec
    if not spec.rules:
        raise _fail(where, "spec.rules", "no rule")
    for index, parent in enumerate(spec.parent_refs):
        _port(where, f"spec.parentRefs[{index}].port", parent.port)
    for index, rule in enumerate(spec.rules):
        for number, backend in enumerate(rule.backend_refs):
            field = f"spec.rules[{index}].backendRefs[{number}]"
            allowed = (backend.group, backend.kind) == ("", "Service") or (
                backend.group,
                backend.kind,
            ) == (STUNNER_GROUP, "StaticService")
            if not allowed:
                raise _fail(
                    where,
                    f"{field}.kind",
                    f"{backend.kind} (group {backend.group!r}) is not a Service or a "
                    f"StaticService (group {STUNNER_GROUP!r})",
                    "InvalidKind",
                )
            _name(f"{where}: {field}.name", backend.name, is_dns_label)
            if backend.namespace is not None:
                _name(f"{where}: {field}.namespace", backend.namespace, is_dns_label)
            _port(where, f"{field}.port", backend.port)
            _port(where, f"{field}.endPort", backend.end_port)
            if backend.end_port is not None:
                if backend.port is None:
                    raise _fail(where, f"{field}.endPort", "is given without port")
                if backend.end_port < backend.port:
                    raise _fail(
                        where,
                        f"{field}.endPort",
                        f"{backend.end_port} is below port {backend.port}",
                    )


def _check_config(config: GatewayConfig, where: str) -> None:
    spec = config.spec
    if re.fullmatch(REALM_PATTERN, spec.realm) is None:
        raise _fail(where, "spec.realm", f"{spec.realm!r} is not a realm (lowercase DNS name)")
    problem = check_realm(spec.realm)
    if problem is not None:
        raise _fail(where, "spec.realm", f"too long: {problem}")
    kind = AUTH_TYPES.get(spec.auth_type.lower())
    if kind is None:
        raise _fail(
            where,
            "spec.authType",
            f"{spec.auth_type!r} is not one of {', '.join(AUTH_TYPES)}",
            "InvalidParameters",
        )
    if spec.auth_ref is not None:
        inline = [
            name
            for name, value in (
                ("userName", spec.user_name),
                ("password", spec.password),
                ("sharedSecret", spec.shared_secret),
            )
            if value is not None
        ]
        if inline:
            raise _fail(
                where,
                f"spec.{inline[0]}",
                "is given with spec.authRef (credentials come from one place)",
                "InvalidParameters",
            )
        _secret_ref(where, "spec.authRef", spec.auth_ref)
    elif kind == "static":
        for field, value in (("sharedSecret", spec.shared_secret),):
            if value is not None:
                raise _fail(
                    where,
                    f"spec.{field}",
                    f"is for authType ephemeral, not {spec.auth_type}",
                    "InvalidParameters",
                )
        if not spec.user_name:
            raise _fail(
                where,
                "spec.userName",
                f"is required for authType {spec.auth_type}",
                "InvalidParameters",
            )
        if re.fullmatch(USERNAME_PATTERN, spec.user_name) is None:
            raise _fail(
                where,
                "spec.userName",
                "has characters a TURN user name cannot",
                "InvalidParameters",
            )
        _credential(where, "spec.password", spec.password, spec.auth_type)
    else:
        # Ephemeral: the shared secret is sharedSecret, or password (the shape of a
        # config moved from static to ephemeral); userName, if given, is the user id
        # minted credentials carry by default.
        if spec.shared_secret is not None and spec.password is not None:
            raise _fail(
                where,
                "spec.password",
                "is given with spec.sharedSecret (the shared secret is one of them)",
                "InvalidParameters",
            )
        if spec.user_name is not None and re.fullmatch(r"[^:\s]+", spec.user_name) is None:
            raise _fail(
                where,
                "spec.userName",
                "a user id of ephemeral credentials has no ':' or white space",
                "InvalidParameters",
            )
        if spec.password is not None:
            _credential(where, "spec.password", spec.password, spec.auth_type)
        else:
            _credential(where, "spec.sharedSecret", spec.shared_secret, spec.auth_type)
    if spec.auth_lifetime is not None:
        if kind == "static" and spec.auth_ref is None:
            raise _fail(
                where,
                "spec.authLifetime",
                f"is for authType ephemeral, not {spec.auth_type}",
                "InvalidParameters",
            )
        if not 1 <= spec.auth_lifetime <= MAX_AUTH_LIFETIME:
            raise _fail(
                where,
                "spec.authLifetime",
                f"{spec.auth_lifetime} is not a positive number of seconds",
                "InvalidParameters",
            )


def _credential(where: str, field: str, value: str | SecretRef | None, auth_type: str) -> None:
    if value is None:
        raise _fail(where, field, f"is required for authType {auth_type}", "InvalidParameters")
    if isinstance(value, SecretRef):
        _secret_ref(where, field, value)
    elif not value or value != value.strip():
        raise _fail(where, field, "is empty or has surrounding white space", "InvalidParameters")


def _secret_ref(where: str, field: str, ref: SecretRef) -> None:
    if (ref.group, ref.kind) not in (("", "Secret"), ("v1", "Secret")):
        raise _fail(
            where, f"{field}.kind", f"{ref.kind} ({ref.group!r}) is not a Secret", "InvalidKind"
        )
    _name(f"{where}: {field}.name", ref.name, is_dns_subdomain)
    if ref.namespace is not None:
        _name(f"{where}: {field}.namespace", ref.namespace, is_dns_label)
    if ref.key is not None and re.fullmatch(r"[-._a-zA-Z0-9]+", ref.key) is None:
        raise _fail(where, f"{field}.key", f"{ref.key!r} is not a Secret key")


def _check_static(service: StaticService, where: str) -> None:
    if not service.spec.prefixes:
        raise _fail(where, "spec.prefixes", "no prefix")
    for index, prefix in enumerate(service.spec.prefixes):
        field = f"spec.prefixes[{index}]"
        try:
            network = ipaddress.ip_network(prefix, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(prefix, strict=False)
            except ValueError:
                raise _fail(where, field, f"{prefix!r} is not a CIDR prefix") from None
            raise _fail(
                where, field, f"{prefix} has host bits set; did you mean {loose}?"
            ) from None
        try:
            PeerRule(network)
        except ValueError as exc:
            raise _fail(where, field, str(exc)) from None


def _check_grant(grant: ReferenceGrant, where: str) -> None:
    if not grant.spec.from_:
        raise _fail(where, "spec.from", "no entry")
    if not grant.spec.to:
        raise _fail(where, "spec.to", "no entry")
    for index, origin in enumerate(grant.spec.from_):
        _name(f"{where}: spec.from[{index}].namespace", origin.namespace, is_dns_label)


_CHECKS: Final[dict[type[Any], Any]] = {
    Gateway: _check_gateway,
    GatewayClass: _check_class,
    UDPRoute: _check_route,
    GatewayConfig: _check_config,
    StaticService: _check_static,
    ReferenceGrant: _check_grant,
}
