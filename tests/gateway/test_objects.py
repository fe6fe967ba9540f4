"""One Gateway API object at a time: parsed as the API spells it, refused with a message
naming the object and the field."""

from __future__ import annotations

from typing import Any

import pytest

from relay.gateway.objects import (
    Gateway,
    GatewayClass,
    GatewayConfig,
    GatewayError,
    StaticService,
    UDPRoute,
    parse,
)
from tests.gateway.objects import (
    by_kind,
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


def refused(document: Any, *fragments: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse(document, "default")
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))
    return caught.value


def test_the_issue_example_parses() -> None:
    documents = example()
    parsed = [parse(d, "default") for d in documents]
    gw, udp_route, gw_config = parsed
    assert isinstance(gw, Gateway) and isinstance(udp_route, UDPRoute)
    assert isinstance(gw_config, GatewayConfig)
    assert [(x.name, x.transport, x.port) for x in gw.spec.listeners] == [
        ("udp-listener", "udp", 3478),
        ("tcp-listener", "tcp", 3478),
    ]
    backend = udp_route.spec.rules[0].backend_refs[0]
    assert (backend.kind, backend.name, backend.namespace, backend.ports) == (
        "Service",
        "media-server",
        "apps",
        (0, 0xFFFF),
    )
    assert gw_config.auth == "ephemeral"
    assert gw_config.spec.auth_lifetime == 86400


def test_a_missing_namespace_is_the_default_one_and_a_class_has_none() -> None:
    document = changed(gateway(), "metadata.namespace", None)
    assert parse(document, "team-a").metadata.namespace == "team-a"
    assert parse(gateway_class(), "team-a").metadata.namespace == ""


def test_fields_turnscale_does_not_use_are_ignored() -> None:
    document = static_config(dataplane="default", logLevel="all:INFO")
    document["status"] = {"conditions": []}
    document["metadata"]["labels"] = {"app": "stunner"}
    assert isinstance(parse(document, "default"), GatewayConfig)


@pytest.mark.parametrize(
    ("kind", "version"),
    [("Deployment", "apps/v1"), ("Secret", "v1"), ("HTTPRoute", "gateway.networking.k8s.io/v1")],
)
def test_kinds_turnscale_does_not_read_are_refused(kind: str, version: str) -> None:
    error = refused(
        {"apiVersion": version, "kind": kind, "metadata": {"name": "x"}},
        f"kind {kind!r} ({version}) is not one turnscale reads",
        "Gateway, GatewayClass, UDPRoute, GatewayConfig, StaticService",
    )
    assert error.reason == "InvalidKind"


def test_a_wrong_api_version_is_refused() -> None:
    refused(
        changed(route(), "apiVersion", "stunner.l7mp.io/v1alpha1"),
        "UDPRoute stunner/media-route",
        "apiVersion 'stunner.l7mp.io/v1alpha1'",
    )
    refused(["not", "an", "object"], "expected a Kubernetes object")


SECRET_REF = {"kind": "Secret", "name": "turn-tls"}


@pytest.mark.parametrize(
    ("protocol", "transport"),
    [("TURN-TLS", "tls"), ("TLS", "tls"), ("TURN-DTLS", "dtls"), ("DTLS", "dtls"), ("UDP", "udp")],
)
def test_tls_and_dtls_listeners_and_stunner_s_aliases(protocol: str, transport: str) -> None:
    listener: dict[str, Any] = {"name": "secure", "port": 443, "protocol": protocol}
    if transport != "udp":
        listener["tls"] = {"mode": "Terminate", "certificateRefs": [SECRET_REF]}
    parsed = parse(gateway({"name": "udp", "port": 3478, "protocol": "TURN-UDP"}, listener), "x")
    assert isinstance(parsed, Gateway)
    secure = parsed.spec.listeners[1]
    assert secure.transport == transport
    if transport != "udp":
        assert secure.tls is not None and secure.tls.certificate_refs[0].name == "turn-tls"


@pytest.mark.parametrize(
    ("listener", "fragments"),
    [
        (
            {
                "protocol": "TURN-TLS",
                "tls": {"mode": "Passthrough", "certificateRefs": [SECRET_REF]},
            },
            ["spec.listeners[0].tls.mode", "'Passthrough' is not supported"],
        ),
        (
            {"protocol": "TURN-UDP", "tls": {"certificateRefs": [SECRET_REF]}},
            ["spec.listeners[0].tls", "is for TURN-TLS and TURN-DTLS, not TURN-UDP"],
        ),
        (
            {"protocol": "TURN-TLS", "tls": {"certificateRefs": [{"name": "Not_A_Name"}]}},
            ["spec.listeners[0].tls.certificateRefs[0].name", "'Not_A_Name' is not"],
        ),
        (
            {"protocol": "TURN-TLS", "hostname": "192.0.2.1"},
            ["spec.listeners[0].hostname", "'192.0.2.1' is not a host name"],
        ),
    ],
)
def test_bad_tls_listeners_are_refused(listener: dict[str, Any], fragments: list[str]) -> None:
    refused(gateway({"name": "secure", "port": 443, **listener}), *fragments)


def test_tls_and_tcp_share_the_tcp_ports_and_dtls_the_udp_ones() -> None:
    tls = {"tls": {"certificateRefs": [SECRET_REF]}}
    for first, second in (("TURN-TCP", "TURN-TLS"), ("TURN-UDP", "DTLS")):
        document = gateway(
            {"name": "a", "port": 3478, "protocol": first},
            {"name": "b", "port": 3478, "protocol": second, **tls},
        )
        error = refused(document, "spec.listeners[1].port", "port 3478 is taken by listener 'a'")
        assert error.reason == "Conflicted"
    both = gateway(
        {"name": "a", "port": 443, "protocol": "TURN-TLS", **tls},
        {"name": "b", "port": 443, "protocol": "TURN-DTLS", **tls},
    )
    assert isinstance(parse(both, "x"), Gateway)


@pytest.mark.parametrize(
    ("listeners", "fragments"),
    [
        ([{"name": "u", "port": 3478, "protocol": "SCTP"}], ["listeners[0].protocol", "'SCTP'"]),
        ([{"name": "u", "port": 0, "protocol": "TURN-UDP"}], ["listeners[0].port", "port 0"]),
        (
            [{"name": "u", "port": "3478", "protocol": "TURN-UDP"}],
            ["spec.listeners[0].port", "Expected `int`, got `str`"],
        ),
        (
            [
                {"name": "a", "port": 3478, "protocol": "TURN-UDP"},
                {"name": "a", "port": 3479, "protocol": "TURN-UDP"},
            ],
            ["listeners[1].name", "'a' is given twice"],
        ),
        (
            [
                {"name": "a", "port": 3478, "protocol": "TURN-UDP"},
                {"name": "b", "port": 3478, "protocol": "TURN-UDP"},
            ],
            ["listeners[1].port", "taken by listener 'a'"],
        ),
        ([{"name": "A_B", "port": 1, "protocol": "TURN-UDP"}], ["listeners[0].name"]),
        ([{"port": 1, "protocol": "TURN-UDP"}], ["spec.listeners[0]", "missing required field"]),
    ],
)
def test_bad_listeners_are_refused(listeners: list[dict[str, Any]], fragments: list[str]) -> None:
    refused(gateway(*listeners), "Gateway stunner/stunner-gateway", *fragments)


def test_a_gateway_needs_listeners_and_a_class() -> None:
    refused(changed(gateway(), "spec.listeners", []), "spec.listeners: no listener")
    refused(changed(gateway(), "spec.gatewayClassName", ""), "spec.gatewayClassName: is empty")
    refused(changed(gateway(), "metadata.name", "Not_A_Name"), "metadata.name", "'Not_A_Name'")


def test_gateway_addresses_and_allowed_routes_are_checked() -> None:
    good = changed(
        gateway(),
        "spec.addresses",
        [
            {"type": "IPAddress", "value": "192.0.2.1"},
            {"type": "Hostname", "value": "turn.example.org"},
        ],
    )
    parsed = parse(good, "default")
    assert isinstance(parsed, Gateway) and parsed.spec.addresses[1].value == "turn.example.org"
    refused(
        changed(gateway(), "spec.addresses", [{"value": "not-an-ip"}]), "spec.addresses[0].value"
    )
    refused(
        changed(gateway(), "spec.addresses", [{"type": "NamedAddress", "value": "x"}]),
        "spec.addresses[0].type",
    )
    selector = changed(
        gateway(), "spec.listeners.0.allowedRoutes", {"namespaces": {"from": "Selector"}}
    )
    refused(
        selector, "spec.listeners[0].allowedRoutes.namespaces.from", "'Selector' is not supported"
    )


@pytest.mark.parametrize(
    ("backend", "fragments"),
    [
        (
            {"name": "x", "kind": "Pod"},
            ["backendRefs[0].kind", "Pod", "not a Service or a StaticService"],
        ),
        ({"name": "x", "kind": "StaticService"}, ["backendRefs[0].kind"]),  # without its group
        ({"name": "x", "group": "stunner.l7mp.io", "kind": "Service"}, ["backendRefs[0].kind"]),
        ({"name": "x", "endPort": 5000}, ["backendRefs[0].endPort", "without port"]),
        (
            {"name": "x", "port": 6000, "endPort": 5000},
            ["backendRefs[0].endPort", "below port 6000"],
        ),
        ({"name": "x", "port": 70000}, ["backendRefs[0].port", "70000"]),
        ({"name": "Media_Server"}, ["backendRefs[0].name", "'Media_Server'"]),
        ({"namespace": "apps"}, ["backendRefs[0]", "missing required field `name`"]),
    ],
)
def test_bad_backends_are_refused(backend: dict[str, Any], fragments: list[str]) -> None:
    refused(route(backend), "UDPRoute stunner/media-route: spec.rules[0].", *fragments)


def test_a_route_needs_rules() -> None:
    refused(changed(route(), "spec.rules", []), "UDPRoute stunner/media-route: spec.rules: no rule")


def test_backend_ports() -> None:
    parsed = parse(
        route(
            {"name": "a", "port": 5000},
            {"name": "b", "port": 5000, "endPort": 5100},
            {"name": "c", "group": "stunner.l7mp.io", "kind": "StaticService"},
        ),
        "default",
    )
    assert isinstance(parsed, UDPRoute)
    backends = parsed.spec.rules[0].backend_refs
    assert [b.ports for b in backends] == [(5000, 5000), (5000, 5100), (0, 0xFFFF)]
    assert [b.is_static for b in backends] == [False, False, True]


@pytest.mark.parametrize(
    ("prefix", "fragment"),
    [
        ("10.0.0.1/8", "host bits set; did you mean 10.0.0.0/8?"),
        ("10.0.0.0/33", "is not a CIDR prefix"),
        ("media", "is not a CIDR prefix"),
        ("::ffff:10.0.0.0/104", "write the IPv4 range instead"),
    ],
)
def test_bad_static_service_prefixes_are_refused(prefix: str, fragment: str) -> None:
    refused(
        static_service("192.0.2.0/24", prefix),
        "StaticService stunner/media-net: spec.prefixes[1]",
        fragment,
    )


def test_static_service_prefixes() -> None:
    parsed = parse(static_service("192.0.2.0/24", "2001:db8::/32", "198.51.100.7"), "default")
    assert isinstance(parsed, StaticService)
    assert [str(n) for n in parsed.networks()] == [
        "192.0.2.0/24",
        "2001:db8::/32",
        "198.51.100.7/32",
    ]
    refused(static_service(), "spec.prefixes: no prefix")


@pytest.mark.parametrize(
    ("auth_type", "kind"),
    [
        ("static", "static"),
        ("plaintext", "static"),
        ("ephemeral", "ephemeral"),
        ("longterm", "ephemeral"),
        ("timewindowed", "ephemeral"),
        ("Plaintext", "static"),
    ],
)
def test_auth_type_aliases(auth_type: str, kind: str) -> None:
    document = (
        static_config(authType=auth_type)
        if kind == "static"
        else ephemeral_config(authType=auth_type)
    )
    parsed = parse(document, "default")
    assert isinstance(parsed, GatewayConfig) and parsed.auth == kind


def test_the_default_auth_type_is_plaintext_as_in_stunner() -> None:
    parsed = parse(config(userName="u", password="p"), "default")
    assert isinstance(parsed, GatewayConfig) and parsed.auth == "static"


@pytest.mark.parametrize(
    ("document", "fragments"),
    [
        (config(authType="oauth"), ["spec.authType", "'oauth' is not one of static, plaintext"]),
        (
            config(authType="static", password="p"),
            ["spec.userName: is required for authType static"],
        ),
        (config(authType="static", userName="u"), ["spec.password: is required"]),
        (config(authType="static", userName="u:x", password="p"), ["spec.userName"]),
        (static_config(sharedSecret="s"), ["spec.sharedSecret: is for authType ephemeral"]),
        (static_config(authLifetime=60), ["spec.authLifetime: is for authType ephemeral"]),
        (config(authType="ephemeral"), ["spec.sharedSecret: is required for authType ephemeral"]),
        (ephemeral_config(password="p"), ["spec.password: is given with spec.sharedSecret"]),
        (ephemeral_config(authLifetime=0), ["spec.authLifetime: 0 is not a positive"]),
        (ephemeral_config(authLifetime="1h"), ["spec.authLifetime", "Expected `int | null`"]),
        (ephemeral_config(" padded "), ["spec.sharedSecret: is empty or has"]),
        (static_config(realm="Example.ORG"), ["spec.realm", "'Example.ORG' is not a realm"]),
        (
            config(authRef={"name": "auth"}, userName="u"),
            ["spec.userName: is given with spec.authRef"],
        ),
        (
            static_config(password={"name": "creds", "kind": "ConfigMap"}),
            ["spec.password.kind", "ConfigMap"],
        ),
        (static_config(password={"key": "password"}), ["spec.password", "`name`"]),
        (static_config(password=7), ["spec.password", "Expected `str | object | null`"]),
    ],
)
def test_bad_gateway_configs_are_refused(document: dict[str, Any], fragments: list[str]) -> None:
    error = refused(document, "GatewayConfig stunner/stunner-config: ", *fragments)
    assert error.reason in ("InvalidParameters", "UnsupportedValue", "InvalidKind")


def test_a_password_or_secret_never_shows_in_an_error() -> None:
    error = refused(ephemeral_config(secret="hunter2-secret", password="other-hunter2"))
    assert "hunter2" not in str(error)
    parsed = parse(static_config(password="hunter2-password"), "default")
    assert "hunter2" not in repr(parsed) and "hunter2" not in str(parsed)


def test_ephemeral_with_user_name_and_password_is_the_issue_shape() -> None:
    parsed = by_kind(example(), "GatewayConfig")
    assert parse(parsed, "default").spec.user_name == "stunner"  # type: ignore[union-attr]
    refused(changed(parsed, "spec.userName", "a:b"), "spec.userName", "no ':'")


def test_gateway_class_parameters_ref_is_checked() -> None:
    parsed = parse(gateway_class(), "default")
    assert isinstance(parsed, GatewayClass)
    assert parsed.spec.parameters_ref is not None
    assert parsed.spec.parameters_ref.name == "stunner-config"
    refused(
        changed(gateway_class(), "spec.parametersRef.kind", "ConfigMap"),
        "GatewayClass stunner-gatewayclass: spec.parametersRef",
        "not a GatewayConfig",
    )
    refused(
        changed(gateway_class(), "spec.parametersRef.namespace", None),
        "spec.parametersRef.namespace: is required",
    )
