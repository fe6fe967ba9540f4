"""deploy/crds and components/gateway-api: the CRDs define what the relays read (and accept
STUNner's YAML), the component turns the relays to ``--kubernetes`` with exactly the RBAC
their watches and status writes need, and its example objects configure the relays the
Deployment and Service expose."""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from relay import settings as relay_settings
from relay.gateway import ice_server
from relay.gateway.ice import turn_urls
from relay.gateway.kube import KINDS
from relay.gateway.live import LiveSecrets, gateway_scopes
from relay.gateway.objects import SOCKETS, parse
from relay.gateway.translate import Catalog, EphemeralAuth, translate
from tests.deploy.kustomize import Obj, build
from tests.deploy.manifests import (
    CRDS,
    container_ports,
    containers,
    env,
    of_kind,
    one,
    overlay,
    pod_labels,
    pod_spec,
)
from tests.deploy.test_references import flags, literal_env

RELAY = "stunner-gateway"
EXAMPLE = Path(__file__).resolve().parents[1] / "gateway" / "example.yaml"
STUNNER = "stunner.l7mp.io"
GATEWAY_KINDS = ("Gateway", "GatewayClass", "UDPRoute", "GatewayConfig", "StaticService")


@pytest.fixture(scope="module")
def component(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return build(overlay(tmp_path_factory.mktemp("gateway-api"), ("gateway-api",)))


@pytest.fixture(scope="module")
def crds() -> dict[str, Obj]:
    return {crd["spec"]["names"]["kind"]: crd for crd in build(CRDS)}


def openapi_to_jsonschema(node: Any) -> Any:
    """An openAPIV3Schema as JSON Schema: the x-kubernetes-* extensions dropped, and a
    preserve-unknown-fields node without a type left open."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: openapi_to_jsonschema(value)
        for key, value in node.items()
        if not key.startswith("x-kubernetes-") and key not in ("format", "description")
    }
    closed = not node.get("x-kubernetes-preserve-unknown-fields")
    if node.get("type") == "object" and "properties" in node and closed:
        out.setdefault("additionalProperties", False)
    return out


def validator(crd: Obj) -> jsonschema.Draft202012Validator:
    (version,) = crd["spec"]["versions"]
    schema = openapi_to_jsonschema(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft202012Validator(schema)


def crd_errors(crds: Mapping[str, Obj], obj: Obj) -> list[str]:
    return [e.message for e in validator(crds[obj["kind"]]).iter_errors(obj)]


def test_the_crds_define_the_kinds_the_relays_read(crds: dict[str, Obj]) -> None:
    assert set(crds) == {"UDPRoute", "GatewayConfig", "StaticService"}
    for kind, crd in crds.items():
        spec = crd["spec"]
        assert spec["group"] == STUNNER and spec["scope"] == "Namespaced"
        assert spec["names"]["plural"] == KINDS[kind].plural
        assert crd["metadata"]["name"] == f"{KINDS[kind].plural}.{STUNNER}"
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
        assert ("subresources" in version) == (kind == "UDPRoute")  # the relays write its status


def test_stunner_yaml_fits_the_crds(crds: dict[str, Obj], component: list[Obj]) -> None:
    documents = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] in crds]
    documents += [o for o in component if o["kind"] in crds]
    stunner_only = {
        "apiVersion": f"{STUNNER}/v1",
        "kind": "GatewayConfig",
        "metadata": {"name": "x"},
        "spec": {
            "dataplane": "default",
            "logLevel": "all:INFO",
            "authType": "plaintext",
            "userName": "user-1",
            "password": "pass-1",
            "loadBalancerServiceAnnotations": {"a": "b"},
        },
    }
    for document in [*documents, stunner_only]:
        assert not crd_errors(crds, document), document
        parse(document, "stunner")  # and the relays read them


MISTAKES = {
    "UDPRoute": "media-route",
    "GatewayConfig": "stunner-config",
    "StaticService": "media-servers",
}


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("UDPRoute", ("spec.rules.0.backendRefs.0.kind", "Pod"), "'Pod' is not one of"),
        ("UDPRoute", ("spec.rules.0.backendRefs.0.port", 0), "less than the minimum"),
        ("UDPRoute", ("spec.rules", []), "should be non-empty"),
        ("UDPRoute", ("spec.parentRefs.0.sectionName", 7), "is not of type 'string'"),
        ("GatewayConfig", ("spec.authType", "oauth"), "'oauth' is not one of"),
        ("GatewayConfig", ("spec.authLifetime", 0), "less than the minimum"),
        ("GatewayConfig", ("spec.realm", "Not A Realm"), "does not match"),
        ("StaticService", ("spec.prefixes", []), "should be non-empty"),
    ],
)
def test_the_crd_schemas_refuse_mistakes(
    crds: dict[str, Obj], component: list[Obj], kind: str, change: tuple[str, Any], message: str
) -> None:
    path, value = change
    obj = copy.deepcopy(one(component, kind, MISTAKES[kind]))
    obj["spec"].setdefault("parentRefs", [{"name": "x"}])
    target: Any = obj
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[int(parts[-1]) if isinstance(target, list) else parts[-1]] = value
    errors = crd_errors(crds, obj)
    assert any(message in e for e in errors), errors


def test_the_relays_run_in_kubernetes_mode(component: list[Obj]) -> None:
    relay = one(component, "Deployment", RELAY)
    (box,) = containers(relay)
    container_env = env(box)
    parser = relay_settings.build_parser()
    known = flags(parser)
    assert set(container_env) <= set(known)
    args = parser.parse_flags([], literal_env(container_env, known))
    assert args.kubernetes is True
    replaced = {
        "TURNSCALE_LISTEN",
        "TURNSCALE_REALM",
        "TURNSCALE_AUTH_SECRET_FILE",
        "TURNSCALE_ALLOW_PEER",
    }
    assert not replaced & set(container_env)
    assert pod_spec(relay)["automountServiceAccountToken"] is True
    assert one(component, "ServiceAccount", "turnscale-relay")["automountServiceAccountToken"]
    items = pod_spec(relay)["volumes"][0]["secret"]["items"]
    assert [item["key"] for item in items] == ["report-token"]
    policy = one(component, "NetworkPolicy", "turnscale-relay")
    api = [rule for rule in policy["spec"]["egress"] if "to" not in rule]
    assert {p["port"] for rule in api for p in rule["ports"]} == {443, 6443}


def test_the_example_objects_configure_what_the_relays_expose(component: list[Obj]) -> None:
    relay = one(component, "Deployment", RELAY)
    gateway_objects = [
        parse(o, "stunner")
        for o in component
        if o["kind"] in ("Gateway", "GatewayClass", "UDPRoute", "GatewayConfig", "StaticService")
    ]
    secret = {
        "metadata": {"name": "turnscale", "namespace": "stunner"},
        "data": {"auth-secrets": base64.b64encode(b"s3cret").decode()},
    }
    secrets = LiveSecrets({("stunner", "turnscale"): secret})
    settings = translate(Catalog.of(gateway_objects), ("stunner", RELAY), secrets)
    assert pod_labels(relay)["turnscale.io/gateway"] == settings.name
    assert settings.problems == []
    assert isinstance(settings.auth, EphemeralAuth) and settings.auth.secret == "s3cret"
    # TLS runs over a TCP socket (and DTLS over a UDP one).
    listeners = {(SOCKETS[item.transport].upper(), item.port) for item in settings.listeners}
    exposed = {
        (proto, number) for name, number, proto in container_ports(relay) if name != "health"
    }
    assert listeners == exposed
    service = one(component, "Service", RELAY)
    assert listeners == {(p["protocol"], p["port"]) for p in service["spec"]["ports"]}
    # Every Secret the GatewayConfig references is one the relays may read.
    role = one(component, "Role", "turnscale-relay-gateway")
    (secret_rule,) = [r for r in role["rules"] if r["resources"] == ["secrets"]]
    assert {name for _, name in secrets.requested} <= set(secret_rule["resourceNames"])


def test_the_tls_listener_serves_the_certificate_s_secret_on_443(component: list[Obj]) -> None:
    relay = one(component, "Deployment", RELAY)
    gateway_objects = [parse(o, "stunner") for o in component if o["kind"] in GATEWAY_KINDS]
    secret = {"data": {"auth-secrets": base64.b64encode(b"s3cret").decode()}}
    settings = translate(
        Catalog.of(gateway_objects),
        ("stunner", RELAY),
        LiveSecrets({("stunner", "turnscale"): secret}),
    )
    (tls,) = [item for item in settings.listeners if item.transport == "tls"]
    assert tls.ref_problem is None and tls.port == 443
    # The Secret is the one the Certificate keeps current, and the relays may read it.
    certificate = one(component, "Certificate", "turnscale-tls")
    assert tls.certificate == ("stunner", certificate["spec"]["secretName"])
    role = one(component, "Role", "turnscale-relay-gateway")
    (secret_rule,) = [r for r in role["rules"] if r["resources"] == ["secrets"]]
    assert certificate["spec"]["secretName"] in secret_rule["resourceNames"]
    # /ice hands out the listener's hostname, a name the certificate carries.
    assert tls.hostname in certificate["spec"]["dnsNames"]
    auth = one(component, "Deployment", "turnscale-auth")
    (address,) = env(containers(auth)[0])["TURNSCALE_PUBLIC_ADDRESS"].split(",")
    assert turn_urls(settings, [address])[-1] == f"turns:{tls.hostname}:443?transport=tcp"
    # A non-root relay binds 443 itself: the namespaced sysctl starts unprivileged ports
    # there, so the port the Gateway and /ice name is the one bound.
    sysctls = {s["name"]: s["value"] for s in pod_spec(relay)["securityContext"]["sysctls"]}
    assert int(sysctls["net.ipv4.ip_unprivileged_port_start"]) <= tls.port
    assert pod_spec(relay)["securityContext"]["runAsNonRoot"] is True
    service = one(component, "Service", RELAY)
    assert {"name": "turn-tls", "port": 443, "targetPort": "turn-tls", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )
    policy = one(component, "NetworkPolicy", "turnscale-relay")
    assert {"protocol": "TCP", "port": 443} in policy["spec"]["ingress"][0]["ports"]
    # The PEMs the relay writes stay in memory, never on the node's disk.
    (tmp,) = [v for v in pod_spec(relay)["volumes"] if v["name"] == "tmp"]
    assert tmp["emptyDir"]["medium"] == "Memory"
    (box,) = containers(relay)
    assert {m["mountPath"] for m in box["volumeMounts"] if m["name"] == "tmp"} == {"/tmp"}


def granted(component: list[Obj], account: str) -> set[tuple[str, str, str, str]]:
    """(scope, group, resource, verb): "cluster" from ClusterRoles, else the namespace."""
    out = set()
    bindings = of_kind(component, "ClusterRoleBinding") + of_kind(component, "RoleBinding")
    for binding in bindings:
        if {"kind": "ServiceAccount", "name": account, "namespace": "stunner"} not in (
            binding["subjects"]
        ):
            continue
        ref = binding["roleRef"]
        role = one(component, ref["kind"], ref["name"])
        scope = "cluster" if ref["kind"] == "ClusterRole" else role["metadata"]["namespace"]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((scope, group, resource, verb))
    return out


def watched(*extra: str) -> set[tuple[str, str, str, str]]:
    """list and watch of what :func:`relay.gateway.live.read_gateway` follows, and ``extra``
    kinds cluster-wide."""
    needed = set()
    scopes = [
        (scope.kind, "stunner" if scope.namespace else "cluster")
        for scope in gateway_scopes("stunner")
    ]
    for kind, where in [*scopes, ("Secret", "stunner"), *((k, "cluster") for k in extra)]:
        for verb in ("list", "watch"):
            needed.add((where, KINDS[kind].group, KINDS[kind].plural, verb))
    return needed


def test_the_relays_get_exactly_the_rbac_their_watches_and_status_writes_need(
    component: list[Obj],
) -> None:
    needed = watched("EndpointSlice")
    needed.add(("stunner", KINDS["Gateway"].group, "gateways/status", "patch"))
    needed.add(("cluster", KINDS["UDPRoute"].group, "udproutes/status", "patch"))
    assert granted(component, "turnscale-relay") == needed


def test_the_ice_endpoint_is_in_cluster_only_and_reads_the_gateway_live(
    component: list[Obj],
) -> None:
    auth = one(component, "Deployment", "turnscale-auth")
    (box,) = containers(auth)
    assert box["args"] == ["auth"]
    container_env = env(box)
    parser = ice_server.build_parser()
    known = flags(parser)
    assert set(container_env) <= set(known), set(container_env) - set(known)
    args = parser.parse_flags([], literal_env(container_env, known))
    assert args.kubernetes is True and args.gateway == RELAY
    assert container_env["TURNSCALE_NAMESPACE"] == {"fieldRef": "metadata.namespace"}
    port = args.http.port
    assert {(n, p) for n, p, _ in container_ports(auth)} == {("http", port)}
    service = one(component, "Service", "turnscale-auth")
    assert service["spec"]["type"] == "ClusterIP"
    relay_service = one(component, "Service", RELAY)
    assert port not in {p["port"] for p in relay_service["spec"]["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert box[probe]["httpGet"] == {"path": path, "port": "http"}
    spec = pod_spec(auth)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert granted(component, "turnscale-auth") == watched()  # reads, never writes
    # Callers authenticate with a token from the mounted Secret, and only labelled
    # namespaces reach the port at all.
    token_file = PurePosixPath(container_env["TURNSCALE_CALLER_TOKEN_FILE"])
    (mount,) = [m for m in box["volumeMounts"] if token_file.is_relative_to(m["mountPath"])]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert {item["path"] for item in volume["secret"]["items"]} == {token_file.name}
    policy = one(component, "NetworkPolicy", "turnscale-auth")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"turnscale.io/ice-caller": "true"}}}
    ]
