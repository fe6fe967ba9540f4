"""Every manifest parses; every rendered object validates: core kinds with
kubernetes-validate (strict, the newest Kubernetes it ships), custom resources with
JSON schemas written from their CRDs; and kubectl's kustomize renders the same."""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from relay.gateway.objects import KINDS as GATEWAY_API_KINDS
from relay.gateway.objects import parse as parse_gateway_object
from tests.deploy.kustomize import KustomizeError, Obj, build, load_documents, resource_id
from tests.deploy.manifests import (
    BUILDS,
    CRDS,
    DEPLOY,
    EXAMPLE,
    manifest_files,
    overlay,
    render_all,
)
from tests.tools import require_tool

SCHEMAS = Path(__file__).parent / "schemas"
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("cert-manager.io/v1", "Certificate"): "certificate.json",
}
KUBERNETES_VERSION = kubernetes_validate.latest_version()
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "GatewayClass",
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    out = render_all(tmp_path_factory.mktemp("overlays"))
    out["crds"] = build(CRDS)  # installed on their own, before an overlay that needs them
    return out


@cache
def schema(name: str) -> Any:
    document = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(document)
    return document


def test_every_manifest_file_parses() -> None:
    files = manifest_files()
    assert len(files) >= 15
    for path in files:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert documents, path
        for document in documents:
            assert isinstance(document, dict), path
            if path.name == "kustomization.yaml":
                assert document["kind"] in ("Kustomization", "Component"), path
            elif document.get("$patch") != "delete":
                assert load_documents(path), path


def test_every_kustomization_is_rendered_by_the_tests() -> None:
    directories = {p.parent for p in DEPLOY.rglob("kustomization.yaml")}
    components = {name for parts in BUILDS.values() for name in parts}
    covered = {
        DEPLOY / "base",
        EXAMPLE,
        CRDS,
        *(DEPLOY / "components" / c for c in components),
    }
    assert directories == covered


def test_the_kubernetes_version_validated_against_is_current() -> None:
    major, minor = (int(part) for part in KUBERNETES_VERSION.split(".")[:2])
    assert (major, minor) >= (1, 33)


def test_every_object_validates(rendered: dict[str, list[Obj]]) -> None:
    for name, objects in rendered.items():
        ids = [resource_id(obj) for obj in objects]
        assert len(ids) == len(set(ids)), name
        for obj in objects:
            where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
            custom = CUSTOM.get((obj["apiVersion"], obj["kind"]))
            if custom is not None:
                errors = list(jsonschema.Draft202012Validator(schema(custom)).iter_errors(obj))
                assert not errors, f"{where}: {[e.message for e in errors]}"
            elif obj["kind"] in GATEWAY_API_KINDS:
                # Read the way the relays read them (their CRD schemas: test_gateway_api).
                parse_gateway_object(obj, "default")
            else:
                try:
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    path = ".".join(map(str, exc.path))
                    pytest.fail(f"{where}: {path}: {exc.message}")
            if obj["kind"] in CLUSTER_SCOPED:
                assert "namespace" not in obj["metadata"], where
            else:
                assert obj["metadata"].get("namespace") == "stunner", where


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"minReplicasCount": 2}, "Additional properties"),  # a typo the API would prune
        ({"fallback": {"replicas": 4}}, "failureThreshold"),
        (
            {"fallback": {"failureThreshold": 3, "replicas": 4, "behavior": "sometimes"}},
            "sometimes",
        ),
        ({"triggers": [{"type": "external-push", "metadata": {"targetPerReplica": 100}}]}, "100"),
    ],
)
def test_the_custom_resource_schemas_catch_mistakes(document: Obj, error: str) -> None:
    scaled_object: Obj = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "t", "metadata": {}}]},
    }
    scaled_object["spec"].update(document)
    errors = list(
        jsonschema.Draft202012Validator(schema("scaledobject.json")).iter_errors(scaled_object)
    )
    assert errors and any(error in e.message for e in errors), [e.message for e in errors]


def test_a_recording_rule_cannot_have_alert_fields() -> None:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": {"groups": [{"name": "g", "rules": [{"record": "r", "expr": "1", "for": "1m"}]}]},
    }
    assert list(jsonschema.Draft202012Validator(schema("prometheusrule.json")).iter_errors(rule))


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: x-\n"
    )
    with pytest.raises(KustomizeError, match="namePrefix"):
        build(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "configMapGenerator:\n- name: x\n  files: [../secret.txt]\n"
        "  options: {disableNameSuffixHash: true}\n"
    )
    with pytest.raises(KustomizeError, match="load restrictor"):
        build(tmp_path)


def _kubectl_kustomize(directory: Path) -> list[Obj]:
    # The real kustomize (inside kubectl) checks the renderer the other tests use.
    kubectl = require_tool("kubectl")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("name", [*BUILDS, "example", "crds"])
def test_kubectl_kustomize_renders_the_same(name: str, tmp_path: Path) -> None:
    fixed = {"example": EXAMPLE, "crds": CRDS}
    directory = fixed.get(name) or overlay(tmp_path / name, BUILDS[name])
    theirs = {resource_id(obj): obj for obj in _kubectl_kustomize(directory)}
    ours = {resource_id(obj): obj for obj in build(directory)}
    assert theirs.keys() == ours.keys()
    for key, obj in ours.items():
        assert theirs[key] == obj, key
