"""The manifests agree with each other and with the binaries: selectors match pod labels,
ports match container ports, the ScaledObject targets the relay Deployment and names the
scaler's headless Service and gRPC port, and every TURNSCALE_* variable is a real flag
of the binary it is given to, with a value that flag accepts."""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from relay import settings as relay_settings
from scaler import config as scaler_config
from scaler.common.flags import ConfigError, Flag, FlagParser
from scaler.keda.metadata import KEYS, parse_trigger
from scaler.kube.selector import parse_selector
from scaler.scaling import ScalingPolicy
from tests.deploy.kustomize import Obj
from tests.deploy.manifests import (
    NAMESPACE,
    container_ports,
    containers,
    env,
    labels_match,
    of_kind,
    one,
    pod_labels,
    pod_spec,
    render_all,
)

RELAY = "stunner-gateway"  # the relay Deployment, its LoadBalancer Service, the gateway
SCALER = "turnscale-scaler"
HEADLESS = "turnscale-scaler-headless"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    return render_all(tmp_path_factory.mktemp("overlays"))


@pytest.fixture(scope="module")
def everything(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["everything"]


@pytest.fixture(scope="module")
def base(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["base"]


def workloads(objects: list[Obj]) -> list[Obj]:
    return of_kind(objects, "Deployment")


def selected(objects: list[Obj], selector: dict[str, str]) -> list[Obj]:
    return [w for w in workloads(objects) if labels_match(selector, pod_labels(w))]


def service_cluster_name(service: Obj) -> str:
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"


def resolve_port(workload: Obj, target: int | str, protocol: str) -> int:
    for name, number, proto in container_ports(workload):
        if target in (name, number) and proto == protocol:
            return number
    raise AssertionError(f"{workload['metadata']['name']} has no {protocol} port {target!r}")


def container(workload: Obj) -> Obj:
    found = containers(workload)
    assert len(found) == 1
    return found[0]


# ---- selectors and ports -----------------------------------------------------------------


def test_deployments_select_their_own_pods(rendered: dict[str, list[Obj]]) -> None:
    for objects in rendered.values():
        for workload in workloads(objects):
            assert labels_match(workload["spec"]["selector"]["matchLabels"], pod_labels(workload))


def test_every_service_selects_one_deployment_and_targets_its_ports(
    rendered: dict[str, list[Obj]],
) -> None:
    for objects in rendered.values():
        for service in of_kind(objects, "Service"):
            targets = selected(objects, service["spec"]["selector"])
            assert len(targets) == 1, service["metadata"]["name"]
            for port in service["spec"]["ports"]:
                resolve_port(targets[0], port["targetPort"], port.get("protocol", "TCP"))


def test_the_relay_service_is_turn_only_with_client_ip_affinity(
    rendered: dict[str, list[Obj]],
) -> None:
    service = one(rendered["base"], "Service", RELAY)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    relay = one(rendered["base"], "Deployment", RELAY)
    exposed = {
        (resolve_port(relay, p["targetPort"], p["protocol"]), p["protocol"])
        for p in service["spec"]["ports"]
    }
    assert exposed == {(3478, "UDP"), (3478, "TCP")}  # no health port
    switched_off = one(rendered["relay-service-clusterip"], "Service", RELAY)["spec"]
    assert switched_off["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in switched_off


def test_pod_disruption_budgets_select_a_deployment(everything: list[Obj]) -> None:
    budgets = of_kind(everything, "PodDisruptionBudget")
    assert {b["metadata"]["name"] for b in budgets} == {RELAY, SCALER}
    for budget in budgets:
        assert len(selected(everything, budget["spec"]["selector"]["matchLabels"])) == 1


def test_network_policies_cover_the_pods_and_ports_they_name(everything: list[Obj]) -> None:
    relay = one(everything, "Deployment", RELAY)
    scaler = one(everything, "Deployment", SCALER)
    relay_policy = one(everything, "NetworkPolicy", "turnscale-relay")["spec"]
    scaler_policy = one(everything, "NetworkPolicy", "turnscale-scaler")["spec"]
    assert selected(everything, relay_policy["podSelector"]["matchLabels"]) == [relay]
    assert selected(everything, scaler_policy["podSelector"]["matchLabels"]) == [scaler]
    # Ingress ports exist on the pods they protect.
    for workload, policy in ((relay, relay_policy), (scaler, scaler_policy)):
        for rule in policy["ingress"]:
            for port in rule["ports"]:
                if "endPort" not in port:
                    resolve_port(workload, port["port"], port["protocol"])
    # Relayed ports: the range the relay uses.
    relay_env = env(container(relay))
    low, high = map(int, relay_env["TURNSCALE_RELAY_PORTS"].split("-"))
    ranges = [
        (p["port"], p["endPort"])
        for rule in relay_policy["ingress"]
        for p in rule["ports"]
        if "endPort" in p
    ]
    assert ranges == [(low, high)]
    # Relays may reach the scaler's report port, and the scaler admits them on it.
    to_scaler = [
        rule
        for rule in relay_policy["egress"]
        if any(
            "podSelector" in peer
            and "namespaceSelector" not in peer
            and labels_match(peer["podSelector"]["matchLabels"], pod_labels(scaler))
            for peer in rule["to"]
        )
    ]
    report_port = resolve_port(scaler, "http", "TCP")
    assert [p["port"] for rule in to_scaler for p in rule["ports"]] == [report_port]
    from_relays = [
        rule
        for rule in scaler_policy["ingress"]
        if any(
            "podSelector" in peer
            and labels_match(peer["podSelector"]["matchLabels"], pod_labels(relay))
            for peer in rule["from"]
        )
    ]
    assert [p["port"] for rule in from_relays for p in rule["ports"]] == [report_port]
    # KEDA reaches gRPC (and HTTP for metrics-api).
    grpc_port = resolve_port(scaler, "grpc", "TCP")
    admitted = {p["port"] for rule in scaler_policy["ingress"] for p in rule["ports"]}
    assert {grpc_port, report_port} <= admitted
    assert scaler_policy["policyTypes"] == ["Ingress"]  # egress: the Kubernetes API


# ---- KEDA -------------------------------------------------------------------------------


def test_the_scaled_object_targets_the_relay_deployment(rendered: dict[str, list[Obj]]) -> None:
    for name, objects in rendered.items():
        scaled = one(objects, "ScaledObject", RELAY)["spec"]
        target = scaled["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment"), name
        assert one(objects, "Deployment", target["name"])["metadata"]["namespace"] == NAMESPACE
        assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (2, 10)
        assert scaled["fallback"]["replicas"] >= scaled["minReplicaCount"]
        down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 600
        assert [p["type"] for p in down["policies"]] == ["Pods"]
        assert len(scaled["triggers"]) == 1


def test_the_external_push_trigger_names_the_headless_service_grpc_port(
    base: list[Obj],
) -> None:
    scaled = one(base, "ScaledObject", RELAY)["spec"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "external-push"
    metadata = trigger["metadata"]
    host, _, port = metadata["scalerAddress"].rpartition(":")
    headless = one(base, "Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    assert host == service_cluster_name(headless)
    (service_port,) = [p for p in headless["spec"]["ports"] if p["port"] == int(port)]
    assert service_port["name"] == "grpc"
    (scaler,) = selected(base, headless["spec"]["selector"])
    assert scaler["metadata"]["name"] == SCALER
    grpc_port = resolve_port(scaler, service_port["targetPort"], "TCP")
    assert env(container(scaler))["TURNSCALE_GRPC"].endswith(f":{grpc_port}")
    # The scaler reads these keys (and ignores scalerAddress); they parse.
    assert set(metadata) - {"scalerAddress"} <= set(KEYS)
    parsed = parse_trigger(metadata, ScalingPolicy())
    assert (
        parsed.gateway
        == RELAY
        == pod_labels(one(base, "Deployment", RELAY))["turnscale.io/gateway"]
    )
    assert parsed.policy == ScalingPolicy(2, 10, 100)
    assert metadata["targetPerReplica"] == "100"
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (
        parsed.policy.min_replicas,
        parsed.policy.max_replicas,
    )


def test_the_metrics_api_trigger_names_the_http_service_and_scale_endpoint(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["metrics-api"]
    (trigger,) = one(objects, "ScaledObject", RELAY)["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    metadata = trigger["metadata"]
    assert metadata["valueLocation"] == "allocations"
    assert metadata["targetValue"] == "100"
    url = urlsplit(metadata["url"])
    service = one(objects, "Service", SCALER)
    assert service["spec"]["type"] == "ClusterIP"
    assert url.hostname == service_cluster_name(service)
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    (scaler,) = selected(objects, service["spec"]["selector"])
    http_port = resolve_port(scaler, port["targetPort"], "TCP")
    assert env(container(scaler))["TURNSCALE_HTTP"].endswith(f":{http_port}")
    assert url.path == "/v1/scale"
    assert parse_qs(url.query) == {"gateway": [RELAY]}


# ---- the binaries' flags --------------------------------------------------------------------


def flags(parser: FlagParser) -> dict[str, Flag]:
    return {flag.env: flag for flag in parser.flags()}


def literal_env(container_env: dict[str, Any], known: dict[str, Flag]) -> dict[str, str]:
    """The variables with literal values, as the flags parse them (downward API values
    replaced by what Kubernetes would put there)."""
    out = {}
    for name, value in container_env.items():
        if name not in known:
            continue
        if isinstance(value, dict):
            field = value.get("fieldRef", "")
            out[name] = {"status.podIP": "10.1.2.3"}.get(field, "stunner-gateway-5d9c7-abcde")
        else:
            out[name] = value
    return out


def test_scaler_variables_are_scaler_flags_with_good_values(everything: list[Obj]) -> None:
    scaler = one(everything, "Deployment", SCALER)
    container_env = env(container(scaler))
    known = flags(scaler_config.build_parser())
    assert set(container_env) <= set(known), set(container_env) - set(known)
    args = scaler_config.build_parser().parse_flags([], literal_env(container_env, known))
    assert args.kubernetes is True
    assert container_env["TURNSCALE_RELAY_NAMESPACE"] == {"fieldRef": "metadata.namespace"}
    assert args.relay_selector.matches(pod_labels(one(everything, "Deployment", RELAY)))
    for name, port in (("TURNSCALE_HTTP", "http"), ("TURNSCALE_GRPC", "grpc")):
        assert int(container_env[name].rpartition(":")[2]) == resolve_port(scaler, port, "TCP")


def test_relay_variables_are_relay_flags_with_good_values(everything: list[Obj]) -> None:
    relay = one(everything, "Deployment", RELAY)
    container_env = env(container(relay))
    parser = relay_settings.build_parser()
    known = flags(parser)
    assert set(container_env) <= set(known), set(container_env) - set(known)
    try:
        parser.parse_flags([], literal_env(container_env, known))
    except ConfigError as exc:
        pytest.fail(f"the relay refuses its environment: {exc}")
    assert container_env["TURNSCALE_POD"] == {"fieldRef": "metadata.name"}
    assert container_env["TURNSCALE_NAMESPACE"] == {"fieldRef": "metadata.namespace"}
    assert container_env["TURNSCALE_GATEWAY"] == {
        "fieldRef": "metadata.labels['turnscale.io/gateway']"
    }
    assert "turnscale.io/gateway" in pod_labels(relay)
    # A listener's container port protocol: TLS runs over TCP.
    protocol = {"udp": "UDP", "tcp": "TCP", "tls": "TCP"}
    listens = {
        (protocol[url.split("://")[0]], int(url.rpartition(":")[2]))
        for url in container_env["TURNSCALE_LISTEN"].split(",")
    }
    assert listens == {
        (proto, number) for name, number, proto in container_ports(relay) if name != "health"
    }
    health = int(container_env["TURNSCALE_HEALTH"].rpartition(":")[2])
    assert health == resolve_port(relay, "health", "TCP")
    drain = float(container_env["TURNSCALE_DRAIN_TIMEOUT"].rstrip("s"))
    assert drain < pod_spec(relay)["terminationGracePeriodSeconds"] == 3600


def test_relays_ship_quotas_and_reach_only_the_media_range(everything: list[Obj]) -> None:
    relay = one(everything, "Deployment", RELAY)
    container_env = env(container(relay))
    parser = relay_settings.build_parser()
    args = parser.parse_flags([], literal_env(container_env, flags(parser)))
    assert 0 < args.user_quota < args.total_quota
    low, high = (int(part) for part in container_env["TURNSCALE_RELAY_PORTS"].split("-"))
    assert args.total_quota < high - low + 1  # quotas bite before the ports run out
    # The allow-list is the NetworkPolicy's media range, and no cluster service is in it.
    allowed = {str(rule.network) for rule in args.allow_peer}
    relay_policy = one(everything, "NetworkPolicy", "turnscale-relay")
    media = {
        peer["ipBlock"]["cidr"]
        for rule in relay_policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    }
    assert allowed == media
    for service_ip in ("10.96.0.10", "10.0.0.1", "172.20.0.10"):
        assert not any(ipaddress.ip_address(service_ip) in rule.network for rule in args.allow_peer)


def test_relays_push_to_every_scaler_through_the_headless_service(everything: list[Obj]) -> None:
    relay_env = env(container(one(everything, "Deployment", RELAY)))
    url = urlsplit(relay_env["TURNSCALE_SCALER"])
    headless = one(everything, "Service", HEADLESS)
    assert url.hostname == service_cluster_name(headless)
    (port,) = [p for p in headless["spec"]["ports"] if p["port"] == url.port]
    assert port["name"] == "http"
    scaler = one(everything, "Deployment", SCALER)
    assert (
        env(container(scaler))["TURNSCALE_TOKEN_FILE"] == relay_env["TURNSCALE_SCALER_TOKEN_FILE"]
    )


def test_probes_use_the_health_endpoints_on_named_ports(everything: list[Obj]) -> None:
    expected = {RELAY: ("/ready", "/live"), SCALER: ("/readyz", "/healthz")}
    for name, (ready, live) in expected.items():
        workload = one(everything, "Deployment", name)
        probes = container(workload)
        assert probes["readinessProbe"]["httpGet"]["path"] == ready
        assert probes["livenessProbe"]["httpGet"]["path"] == live
        for kind in ("readinessProbe", "livenessProbe"):
            resolve_port(workload, probes[kind]["httpGet"]["port"], "TCP")


def test_files_named_by_variables_are_mounted_from_the_secret(everything: list[Obj]) -> None:
    for name in (RELAY, SCALER):
        workload = one(everything, "Deployment", name)
        box = container(workload)
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        for variable, value in env(box).items():
            if not variable.endswith("_FILE"):
                continue
            path = PurePosixPath(value)
            mounts = [m for m in box["volumeMounts"] if path.is_relative_to(m["mountPath"])]
            assert len(mounts) == 1, variable
            secret = volumes[mounts[0]["name"]]["secret"]
            assert secret["secretName"] == "turnscale"
            inside = str(path.relative_to(mounts[0]["mountPath"]))
            assert inside in {item["path"] for item in secret["items"]}, variable


def test_the_prometheus_trigger_sums_what_the_one_exporter_exports(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["prometheus-trigger"]
    scaled = one(objects, "ScaledObject", RELAY)["spec"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    # Users copy this query verbatim: it must stay the plain sum.
    assert metadata["query"] == "sum(stunner_allocations_active)"
    assert metadata["metricName"] == "stunner_allocations_active"
    assert urlsplit(metadata["serverAddress"]).scheme == "http"
    scaler = one(objects, "Deployment", SCALER)
    variables = env(container(scaler))
    assert metadata["threshold"] == variables["TURNSCALE_TARGET_PER_REPLICA"]
    # Exact only with one exporter: the replicas elect it over the Kubernetes API.
    assert scaler["spec"]["replicas"] >= 2 and variables["TURNSCALE_KUBERNETES"] == "true"
    (monitor,) = of_kind(objects, "PodMonitor")
    assert all(endpoint["honorLabels"] for endpoint in monitor["spec"]["podMetricsEndpoints"])


def test_turn_over_tls_is_served_on_443_with_the_certificate_secret(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["turn-tls"]
    relay = one(objects, "Deployment", RELAY)
    box = container(relay)
    variables = env(box)
    parser = relay_settings.build_parser()
    args = parser.parse_flags([], literal_env(variables, flags(parser)))
    (tls,) = [listen for listen in args.listen if listen.transport == "tls"]
    assert tls.address.port == resolve_port(relay, "turn-tls", "TCP")
    service = one(objects, "Service", RELAY)
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == "turn-tls"]
    assert (port["port"], port["targetPort"], port["protocol"]) == (443, "turn-tls", "TCP")
    # The certificate files come from the Secret the Certificate keeps current.
    certificate = one(objects, "Certificate", "turnscale-tls")
    (mount,) = [m for m in box["volumeMounts"] if m["name"] == "tls"]
    (volume,) = [v for v in pod_spec(relay)["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    for name in ("TURNSCALE_TLS_CERT", "TURNSCALE_TLS_KEY"):
        path = PurePosixPath(variables[name])
        assert path.parent == PurePosixPath(mount["mountPath"])
        assert path.name in {item["path"] for item in volume["secret"]["items"]}
    policy = one(objects, "NetworkPolicy", "turnscale-relay")
    assert {"protocol": "TCP", "port": tls.address.port} in policy["spec"]["ingress"][0]["ports"]


# ---- identity, RBAC, hardening -------------------------------------------------------------


def test_the_scaler_has_the_least_rbac_it_needs(everything: list[Obj]) -> None:
    scaler = one(everything, "Deployment", SCALER)
    account = pod_spec(scaler)["serviceAccountName"]
    one(everything, "ServiceAccount", account)
    (binding,) = [
        b
        for b in of_kind(everything, "RoleBinding")
        if {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in b["subjects"]
    ]
    assert binding["roleRef"]["kind"] == "Role"  # namespaced, not cluster-wide
    role = one(everything, "Role", binding["roleRef"]["name"])
    lease = scaler_config.build_parser().parse_flags([], {}).lease_name
    assert "TURNSCALE_LEASE_NAME" not in env(container(scaler))  # the default name
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease],
            "verbs": ["get", "update"],
        },
    ]
    assert not of_kind(everything, "ClusterRole") and not of_kind(everything, "ClusterRoleBinding")
    relay = one(everything, "Deployment", RELAY)
    assert pod_spec(relay)["automountServiceAccountToken"] is False
    relay_account = one(everything, "ServiceAccount", pod_spec(relay)["serviceAccountName"])
    assert relay_account["automountServiceAccountToken"] is False
    assert parse_selector(env(container(scaler))["TURNSCALE_RELAY_SELECTOR"]).matches(
        pod_labels(relay)
    )


def test_pods_are_hardened_with_requests_and_limits(everything: list[Obj]) -> None:
    for workload in workloads(everything):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for box in spec["containers"]:
            context = box["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= box["resources"]["requests"].keys()
            assert {"cpu", "memory"} <= box["resources"]["limits"].keys()
            mounts = {m["mountPath"] for m in box["volumeMounts"]}
            assert "/tmp" in mounts  # the only writable place


def test_replicas_to_start_with(base: list[Obj]) -> None:
    assert one(base, "Deployment", RELAY)["spec"]["replicas"] == 2
    assert one(base, "Deployment", SCALER)["spec"]["replicas"] == 2
    assert one(base, "Namespace", NAMESPACE)


def test_credentials_are_rest_secrets_or_static_users(rendered: dict[str, list[Obj]]) -> None:
    rest = env(container(one(rendered["base"], "Deployment", RELAY)))
    static = env(container(one(rendered["static-credentials"], "Deployment", RELAY)))
    assert "TURNSCALE_AUTH_SECRET_FILE" in rest and "TURNSCALE_USER_FILE" not in rest
    assert "TURNSCALE_USER_FILE" in static and "TURNSCALE_AUTH_SECRET_FILE" not in static
