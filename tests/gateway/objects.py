"""Gateway API documents for tests: the issue's example, and builders for variants."""

from __future__ import annotations

import copy
import random
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

Doc = dict[str, Any]

EXAMPLE = Path(__file__).with_name("example.yaml")
GATEWAY_V1 = "gateway.networking.k8s.io/v1"
STUNNER_V1 = "stunner.l7mp.io/v1"
SHARED_SECRET = "example-shared-secret"


def example() -> list[Doc]:
    """The issue's three documents (Gateway, UDPRoute, GatewayConfig)."""
    documents: list[Doc] = list(yaml.safe_load_all(EXAMPLE.read_text()))
    return documents


def by_kind(documents: Iterable[Doc], kind: str) -> Doc:
    found = [d for d in documents if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def gateway(
    *listeners: Mapping[str, Any],
    name: str = "stunner-gateway",
    namespace: str = "stunner",
    class_name: str = "stunner-gatewayclass",
) -> Doc:
    return {
        "apiVersion": GATEWAY_V1,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": class_name,
            "listeners": [dict(item) for item in listeners]
            or [
                {"name": "udp-listener", "port": 3478, "protocol": "TURN-UDP"},
                {"name": "tcp-listener", "port": 3478, "protocol": "TURN-TCP"},
            ],
        },
    }


def route(
    *backends: Mapping[str, Any],
    name: str = "media-route",
    namespace: str = "stunner",
    parents: list[Mapping[str, Any]] | None = None,
) -> Doc:
    return {
        "apiVersion": STUNNER_V1,
        "kind": "UDPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [dict(p) for p in (parents or [{"name": "stunner-gateway"}])],
            "rules": [{"backendRefs": [dict(b) for b in backends]}],
        },
    }


def config(name: str = "stunner-config", namespace: str = "stunner", **spec: Any) -> Doc:
    return {
        "apiVersion": STUNNER_V1,
        "kind": "GatewayConfig",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"realm": "stunner.example.org", **spec},
    }


def static_config(username: str = "user-1", password: Any = "pass-1", **spec: Any) -> Doc:
    return config(**{"authType": "static", "userName": username, "password": password, **spec})


def ephemeral_config(secret: Any = SHARED_SECRET, **spec: Any) -> Doc:
    return config(**{"authType": "ephemeral", "sharedSecret": secret, **spec})


def static_service(*prefixes: str, name: str = "media-net", namespace: str = "stunner") -> Doc:
    return {
        "apiVersion": STUNNER_V1,
        "kind": "StaticService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"prefixes": list(prefixes)},
    }


def gateway_class(
    config_name: str = "stunner-config",
    namespace: str = "stunner",
    name: str = "stunner-gatewayclass",
) -> Doc:
    return {
        "apiVersion": GATEWAY_V1,
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {
            "controllerName": "stunner.l7mp.io/gateway-operator",
            "parametersRef": {
                "group": "stunner.l7mp.io",
                "kind": "GatewayConfig",
                "name": config_name,
                "namespace": namespace,
            },
        },
    }


def changed(document: Doc, path: str, value: Any) -> Doc:
    """A copy of ``document`` with ``a.b.0.c`` set to ``value`` (None deletes it)."""
    result = copy.deepcopy(document)
    parts = path.split(".")
    target: Any = result
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last: Any = int(parts[-1]) if isinstance(target, list) else parts[-1]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return result


def write_yaml(path: Path, documents: Iterable[Doc]) -> Path:
    path.write_text(yaml.safe_dump_all(list(documents), sort_keys=False))
    return path


def write_secret(root: Path, namespace: str, name: str, keys: Mapping[str, str]) -> Path:
    """A Secret mounted the way kubelet does it: ``..data`` links to a timestamped directory."""
    directory = root / namespace / name
    data = directory / "..2026_01_01_00_00_00.000000000"
    data.mkdir(parents=True)
    for key, value in keys.items():
        (data / key).write_text(value)
    (directory / "..data").symlink_to(data.name)
    for key in keys:
        (directory / key).symlink_to(f"..data/{key}")
    return directory


def turn_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` right now, below the ephemeral range and
    the relays' relayed ports (where other tests' sockets come and go)."""
    start = random.randrange(20000, 32000)
    for offset in range(12000):
        port = 20000 + (start - 20000 + offset) % 12000
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            try:
                udp.bind((host, port))
                tcp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for UDP and TCP")


def rotate_secret(root: Path, namespace: str, name: str, keys: Mapping[str, str], tag: str) -> None:
    """Update a mounted Secret the way kubelet does: a new timestamped directory, then the
    ``..data`` link swapped to it in one rename (the key links stay)."""
    directory = root / namespace / name
    data = directory / f"..2026_01_01_00_00_00.{tag}"
    data.mkdir()
    for key, value in keys.items():
        (data / key).write_text(value)
    link = directory / "..data_tmp"
    link.symlink_to(data.name)
    link.replace(directory / "..data")
    for key in keys:
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")


def tls_listener(
    port: int, *, name: str = "tls-listener", secret: str = "turn-tls", protocol: str = "TURN-TLS"
) -> Doc:
    """A TURN-TLS listener whose certificate is the Secret ``secret`` (the Gateway's
    namespace)."""
    return {
        "name": name,
        "port": port,
        "protocol": protocol,
        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]},
    }
