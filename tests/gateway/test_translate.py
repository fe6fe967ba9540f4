"""A set of objects to one relay's settings: listeners, credentials, the peer allow-list, and
what happened to each route."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_network
from typing import Any

import pytest

from relay.core.peer_policy import PeerRule
from relay.gateway.objects import GatewayError, parse
from relay.gateway.translate import (
    Catalog,
    EphemeralAuth,
    GatewaySettings,
    ListenerSettings,
    ServiceBackend,
    StaticAuth,
    translate,
)
from tests.gateway.objects import (
    changed,
    config,
    ephemeral_config,
    example,
    gateway,
    gateway_class,
    route,
    static_config,
    static_service,
)

GATEWAY = ("stunner", "stunner-gateway")
STATIC = {"group": "stunner.l7mp.io", "kind": "StaticService"}


class Secrets:
    """Secrets as a dict: ``{(namespace, name): {key: value}}``."""

    def __init__(self, secrets: Mapping[tuple[str, str], Mapping[str, str]] | None = None) -> None:
        self.secrets = dict(secrets or {})

    def secret(self, namespace: str, name: str) -> Mapping[str, str]:
        found = self.secrets.get((namespace, name))
        if found is None:
            raise LookupError("not mounted")
        return found


def settings_of(
    *documents: dict[str, Any], secrets: Secrets | None = None, **options: Any
) -> GatewaySettings:
    catalog = Catalog.of(parse(d, "stunner") for d in documents)
    return translate(catalog, GATEWAY, secrets or Secrets(), **options)


def refused(*documents: dict[str, Any], fragments: tuple[str, ...], **options: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        settings_of(*documents, **options)
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))
    return caught.value


def test_the_issue_example() -> None:
    secrets = Secrets({("stunner", "stunner-credentials"): {"password": "the-shared-secret"}})
    settings = settings_of(*example(), secrets=secrets)
    assert (settings.namespace, settings.name) == GATEWAY
    assert settings.config == ("stunner", "stunner-config")
    assert settings.listeners == (
        ListenerSettings("udp-listener", "udp", 3478, attached_routes=1),
        ListenerSettings("tcp-listener", "tcp", 3478, attached_routes=1),
    )
    assert settings.realm == "stunner.example.org"
    assert settings.auth == EphemeralAuth("the-shared-secret", 86400, "stunner")
    assert settings.services == (ServiceBackend("apps", "media-server"),)
    assert settings.static_peers == ()
    assert [(r.name, r.accepted, r.resolved) for r in settings.routes] == [
        ("media-route", True, True)
    ]
    assert settings.problems == []
    assert "the-shared-secret" not in repr(settings)


def test_static_credentials_inline_and_from_a_secret() -> None:
    inline = settings_of(gateway(), static_config("alice", "wonderland"))
    assert inline.auth == StaticAuth("alice", "wonderland")
    referenced = settings_of(
        gateway(),
        static_config("alice", {"name": "creds"}),
        secrets=Secrets({("stunner", "creds"): {"password": "from-the-secret"}}),
    )
    assert referenced.auth == StaticAuth("alice", "from-the-secret")
    other_key = settings_of(
        gateway(),
        ephemeral_config({"name": "creds", "namespace": "vault", "key": "turn"}, authLifetime=600),
        secrets=Secrets({("vault", "creds"): {"turn": "s3"}}),
    )
    assert other_key.auth == EphemeralAuth("s3", 600)


def test_stunner_auth_ref_secrets() -> None:
    secrets = Secrets(
        {
            ("stunner", "plain"): {"type": "plaintext", "username": "u", "password": "p"},
            ("stunner", "longterm"): {"type": "longterm", "secret": "s"},
            ("stunner", "typeless"): {"sharedSecret": "s2"},
        }
    )
    plain = settings_of(gateway(), config(authRef={"name": "plain"}), secrets=secrets)
    assert plain.auth == StaticAuth("u", "p")
    longterm = settings_of(
        gateway(), config(authRef={"name": "longterm"}, authLifetime=60), secrets=secrets
    )
    assert longterm.auth == EphemeralAuth("s", 60)
    typeless = settings_of(
        gateway(), config(authType="ephemeral", authRef={"name": "typeless"}), secrets=secrets
    )
    assert typeless.auth == EphemeralAuth("s2", 86400)
    refused(
        gateway(),
        config(authRef={"name": "longterm"}),
        secrets=Secrets({("stunner", "longterm"): {"type": "longterm"}}),
        fragments=("spec.authRef: Secret stunner/longterm: type longterm needs key 'secret'",),
    )
    refused(
        gateway(),
        config(authRef={"name": "plain"}),
        secrets=Secrets({("stunner", "plain"): {"type": "oauth"}}),
        fragments=("type 'oauth' is not one of",),
    )


def test_missing_secrets_and_keys_name_the_field() -> None:
    refused(
        gateway(),
        static_config("alice", {"name": "creds"}),
        fragments=(
            "GatewayConfig stunner/stunner-config: spec.password: Secret stunner/creds: "
            "not mounted",
        ),
    )
    error = refused(
        gateway(),
        ephemeral_config({"name": "creds"}),
        secrets=Secrets({("stunner", "creds"): {"password": "x"}}),
        fragments=("spec.sharedSecret: Secret stunner/creds has no key 'secret'",),
    )
    assert error.reason == "InvalidParameters"


def test_which_gateway_config() -> None:
    two = [static_config(name="a", password="pa"), static_config(name="b", password="pb")]
    refused(gateway(), *two, fragments=("several GatewayConfigs in namespace stunner (a, b)",))
    by_class = settings_of(gateway(), *two, gateway_class("b"))
    assert by_class.config == ("stunner", "b") and by_class.auth == StaticAuth("user-1", "pb")
    by_flag = settings_of(gateway(), *two, gateway_class("b"), config=("stunner", "a"))
    assert by_flag.config == ("stunner", "a")
    refused(gateway(), *two, config=("stunner", "c"), fragments=("stunner/c (--gateway-config)",))
    refused(
        gateway(),
        *two,
        gateway_class("missing"),
        fragments=(
            "GatewayClass stunner-gatewayclass: spec.parametersRef: GatewayConfig "
            "stunner/missing not found",
        ),
    )
    elsewhere = static_config(namespace="other")
    refused(gateway(), elsewhere, fragments=("no GatewayConfig: none in namespace stunner",))
    assert settings_of(gateway(), elsewhere, gateway_class(namespace="other")).config == (
        "other",
        "stunner-config",
    )


def test_a_missing_gateway() -> None:
    error = refused(static_config(), fragments=("Gateway stunner/stunner-gateway: not found",))
    assert error.reason == "NotFound"


def test_backends_become_peer_rules_and_services() -> None:
    settings = settings_of(
        gateway(),
        static_config(),
        static_service("192.0.2.0/24", "2001:db8::/32"),
        route(
            {**STATIC, "name": "media-net", "port": 5000, "endPort": 5100},
            {"name": "sfu", "port": 3478},
            {"name": "sfu", "namespace": "apps"},
        ),
    )
    assert settings.static_peers == (
        PeerRule(ip_network("192.0.2.0/24"), 5000, 5100),
        PeerRule(ip_network("2001:db8::/32"), 5000, 5100),
    )
    assert settings.services == (
        ServiceBackend("apps", "sfu"),
        ServiceBackend("stunner", "sfu", 3478, 3478),
    )
    assert settings.services[0].dns_name == "sfu.apps.svc"
    assert [str(r) for r in settings.services[1].rules(["10.1.0.2", "10.1.0.1"])] == [
        "10.1.0.1/32:3478",
        "10.1.0.2/32:3478",
    ]


def test_a_missing_static_service_leaves_that_backend_out() -> None:
    settings = settings_of(
        gateway(),
        static_config(),
        static_service("192.0.2.0/24"),
        route({**STATIC, "name": "media-net"}, {**STATIC, "name": "gone"}, {"name": "sfu"}),
    )
    (verdict,) = settings.routes
    assert verdict.accepted and not verdict.resolved
    assert verdict.resolved_reason == "BackendNotFound"
    assert settings.problems == [
        "UDPRoute stunner/media-route: spec.rules[0].backendRefs[1]: StaticService "
        "stunner/gone not found"
    ]
    assert [str(r) for r in settings.static_peers] == ["192.0.2.0/24"]
    assert settings.services == (ServiceBackend("stunner", "sfu"),)


def test_routes_for_other_gateways_are_ignored() -> None:
    settings = settings_of(
        gateway(),
        static_config(),
        route({"name": "a"}, parents=[{"name": "other-gateway"}]),
        route({"name": "b"}, name="r2", parents=[{"name": "stunner-gateway", "namespace": "x"}]),
        route({"name": "c"}, name="r3", parents=[{"name": "stunner-gateway", "kind": "Service"}]),
    )
    assert settings.routes == () and settings.services == ()


def test_route_attachment_follows_section_names_ports_and_allowed_routes() -> None:
    gw = gateway(
        {"name": "udp", "port": 3478, "protocol": "TURN-UDP"},
        {
            "name": "open",
            "port": 3479,
            "protocol": "TURN-TCP",
            "allowedRoutes": {"namespaces": {"from": "All"}},
        },
        {
            "name": "tcp-only",
            "port": 3480,
            "protocol": "TURN-TCP",
            "allowedRoutes": {"kinds": [{"kind": "TCPRoute"}]},
        },
    )
    parent = {"name": "stunner-gateway", "namespace": "stunner"}
    settings = settings_of(
        gw,
        static_config(),
        route({"name": "a"}, name="same-ns", parents=[{**parent, "sectionName": "udp"}]),
        route({"name": "b"}, name="by-port", parents=[{**parent, "port": 3479}]),
        route({"name": "c"}, name="no-section", parents=[{**parent, "sectionName": "dtls"}]),
        route({"name": "d"}, name="other-ns", namespace="apps", parents=[parent]),
        route(
            {"name": "e"},
            name="other-ns-udp",
            namespace="apps",
            parents=[{**parent, "sectionName": "udp"}],
        ),
        route({"name": "f"}, name="kinds", parents=[{**parent, "sectionName": "tcp-only"}]),
    )
    verdicts = {v.name: (v.accepted, v.reason) for v in settings.routes}
    assert verdicts == {
        "same-ns": (True, "Accepted"),
        "by-port": (True, "Accepted"),
        "no-section": (False, "NoMatchingParent"),
        "other-ns": (True, "Accepted"),  # through the listener that admits All
        "other-ns-udp": (False, "NotAllowedByListeners"),
        "kinds": (False, "NotAllowedByListeners"),
    }
    assert {b.name for b in settings.services} == {"a", "b", "d"}
    problems = settings.problems
    assert any("has no listener named 'dtls'" in p for p in problems)
    assert any(
        "UDPRoute apps/other-ns-udp: the listeners of Gateway stunner/stunner-gateway "
        "do not admit it" in p
        for p in problems
    )


def test_the_same_object_twice_is_refused() -> None:
    with pytest.raises(GatewayError, match="UDPRoute stunner/media-route: given twice"):
        Catalog.of(parse(d, "stunner") for d in (route(), changed(route(), "spec.rules", [{}])))


def test_gateway_addresses_are_kept_for_ice_urls() -> None:
    gw = changed(gateway(), "spec.addresses", [{"type": "IPAddress", "value": "192.0.2.1"}])
    assert settings_of(gw, static_config()).addresses == ("192.0.2.1",)


def tls_listener(**tls: Any) -> dict[str, Any]:
    listener: dict[str, Any] = {"name": "tls-listener", "port": 443, "protocol": "TURN-TLS"}
    if tls:
        listener["tls"] = tls
    return listener


@pytest.mark.parametrize(
    ("listener", "reason", "fragment"),
    [
        (tls_listener(), "InvalidCertificateRef", "TURN-TLS needs tls.certificateRefs"),
        (
            tls_listener(certificateRefs=[{"kind": "ConfigMap", "name": "turn-tls"}]),
            "InvalidCertificateRef",
            "tls.certificateRefs[0]: ConfigMap (group '') is not a Secret",
        ),
        (
            tls_listener(certificateRefs=[{"group": "v1", "kind": "Secret", "name": "turn-tls"}]),
            "InvalidCertificateRef",
            "Secret (group 'v1') is not a Secret (group '')",
        ),
        (
            tls_listener(certificateRefs=[{"name": "turn-tls", "namespace": "other"}]),
            "RefNotPermitted",
            "Secret other/turn-tls is in another namespace and no ReferenceGrant in other lets "
            "Gateways of stunner refer to it",
        ),
    ],
)
def test_a_bad_certificate_ref_is_the_listener_s_problem_only(
    listener: dict[str, Any], reason: str, fragment: str
) -> None:
    documents = [
        gateway({"name": "udp-listener", "port": 3478, "protocol": "TURN-UDP"}, listener),
        ephemeral_config(),
        route(),
    ]
    settings = settings_of(*documents)
    udp, secure = settings.listeners
    assert (udp.ref_problem, udp.certificate) == (None, None)
    assert secure.certificate is None and secure.ref_problem is not None
    assert secure.ref_problem.reason == reason
    assert fragment in secure.ref_problem.message, secure.ref_problem.message


def test_the_first_certificate_ref_names_the_secret_in_the_gateway_s_namespace() -> None:
    refs = [{"name": "turn-tls"}, {"name": "second-ignored"}]
    documents = [
        gateway(
            tls_listener(certificateRefs=refs),
            {
                "name": "dtls-listener",
                "port": 443,
                "protocol": "DTLS",
                "hostname": "turn.example.com",
                "tls": {"certificateRefs": [{"name": "dtls", "namespace": "stunner"}]},
            },
        ),
        ephemeral_config(),
        route(parents=[{"name": "stunner-gateway", "sectionName": "dtls-listener"}]),
    ]
    tls, dtls = settings_of(*documents).listeners
    assert (tls.transport, tls.certificate, tls.ref_problem, tls.attached_routes) == (
        "tls",
        ("stunner", "turn-tls"),
        None,
        0,
    )
    assert (dtls.transport, dtls.certificate, dtls.hostname, dtls.attached_routes) == (
        "dtls",
        ("stunner", "dtls"),
        "turn.example.com",
        1,
    )


def reference_grant(
    namespace: str = "certs", origin: str = "stunner", name: str | None = None
) -> dict[str, Any]:
    to: dict[str, Any] = {"group": "", "kind": "Secret"}
    if name is not None:
        to["name"] = name
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "gateways-to-certs", "namespace": namespace},
        "spec": {
            "from": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": origin}
            ],
            "to": [to],
        },
    }


@pytest.mark.parametrize(
    ("grant", "permitted"),
    [
        (reference_grant(), True),
        (reference_grant(name="turn-tls"), True),
        (reference_grant(name="another-secret"), False),
        (reference_grant(origin="elsewhere"), False),
        (reference_grant(namespace="stunner"), False),  # a grant lives where the target is
        (changed(reference_grant(), "spec.to.0.kind", "ConfigMap"), False),
        (changed(reference_grant(), "spec.from.0.kind", "HTTPRoute"), False),
    ],
)
def test_a_reference_grant_lets_a_listener_use_a_secret_of_another_namespace(
    grant: dict[str, Any], permitted: bool
) -> None:
    listener = tls_listener(certificateRefs=[{"name": "turn-tls", "namespace": "certs"}])
    settings = settings_of(gateway(listener), ephemeral_config(), grant)
    (secure,) = settings.listeners
    if permitted:
        assert (secure.certificate, secure.ref_problem) == (("certs", "turn-tls"), None)
    else:
        assert secure.certificate is None and secure.ref_problem is not None
        assert (secure.ref_problem.reason, secure.ref_problem.grant_namespace) == (
            "RefNotPermitted",
            "certs",
        )


def test_a_reference_grant_needs_from_and_to() -> None:
    for field in ("spec.from", "spec.to"):
        with pytest.raises(GatewayError, match=f"ReferenceGrant certs/gateways-to-certs: {field}"):
            parse(changed(reference_grant(), field, []), "x")
