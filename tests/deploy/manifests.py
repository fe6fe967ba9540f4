"""Rendering ``deploy/`` for the tests: the base, each component, the example overlay."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]

from tests.deploy.kustomize import Obj, build

ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = ROOT / "deploy"
BASE: Final = DEPLOY / "base"
COMPONENTS: Final = DEPLOY / "components"
EXAMPLE: Final = DEPLOY / "overlays" / "example"
CRDS: Final = DEPLOY / "crds"
NAMESPACE: Final = "stunner"

# Every combination worth rendering: name -> components, in order.
BUILDS: Final[dict[str, tuple[str, ...]]] = {
    "base": (),
    "monitoring": ("monitoring",),
    "servicemonitor": ("monitoring", "servicemonitor"),
    "metrics-api": ("metrics-api",),
    # KEDA's prometheus trigger on the scraped sum (an alternative trigger, like
    # metrics-api, so not part of "everything").
    "prometheus-trigger": ("monitoring", "prometheus-trigger"),
    "relay-service-clusterip": ("relay-service-clusterip",),
    "turn-tls": ("turn-tls",),
    "static-credentials": ("static-credentials",),
    # The relays configured live from Gateway API objects (an alternative to the flags,
    # so not part of "everything").
    "gateway-api": ("gateway-api",),
    "everything": (
        "monitoring",
        "servicemonitor",
        "metrics-api",
        "relay-service-clusterip",
        "static-credentials",
        "turn-tls",
    ),
}


def overlay(directory: Path, components: tuple[str, ...]) -> Path:
    """A Kustomization in ``directory`` with the base and ``components``."""
    relative = os.path.relpath(DEPLOY, directory)
    document = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"{relative}/base"],
        "components": [f"{relative}/components/{name}" for name in components],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return directory


def render_all(directory: Path) -> dict[str, list[Obj]]:
    out = {name: build(overlay(directory / name, parts)) for name, parts in BUILDS.items()}
    out["example"] = build(EXAMPLE)
    return out


def manifest_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml"))


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(workload: Obj) -> list[Obj]:
    found: list[Obj] = pod_spec(workload)["containers"]
    return found


def container_ports(workload: Obj) -> Iterator[tuple[str | None, int, str]]:
    """(name, number, protocol) of every container port."""
    for container in containers(workload):
        for port in container.get("ports", []):
            yield port.get("name"), port["containerPort"], port.get("protocol", "TCP")


def env(container: Obj) -> dict[str, Any]:
    """``{name: value}`` for literal values, ``{name: {"fieldRef": path}}`` for the rest."""
    out: dict[str, Any] = {}
    for item in container.get("env", []):
        if "value" in item:
            out[item["name"]] = item["value"]
        else:
            source = item["valueFrom"]
            if "fieldRef" in source:
                out[item["name"]] = {"fieldRef": source["fieldRef"]["fieldPath"]}
            else:
                out[item["name"]] = source
    return out
