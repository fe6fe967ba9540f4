"""A kustomize subset in Python, enough to render ``deploy/`` offline in the tests.

It implements exactly the features the manifests use, and refuses any other field,
so a manifest change that needs more fails loudly here instead of being rendered
wrong. Where ``kubectl kustomize`` is installed, a test checks that both render the
same objects.

Semantics follow kustomize v5: a Kustomization accumulates its ``resources`` (files,
or directories built as kustomizations of their own), then applies its
``components`` in order (each adds its resources, generators and patches to what has
been accumulated so far), then runs its own generators, then its transformers
(``patches``, then ``images``). Files a kustomization loads must be inside its
directory (kustomize's default load restrictor).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

Obj = dict[str, Any]

KUSTOMIZATION = "kustomize.config.k8s.io/v1beta1"
COMPONENT = "kustomize.config.k8s.io/v1alpha1"
FIELDS = {
    "Kustomization": {
        "apiVersion",
        "kind",
        "resources",
        "components",
        "patches",
        "configMapGenerator",
        "images",
    },
    "Component": {"apiVersion", "kind", "resources", "patches", "configMapGenerator"},
}


class KustomizeError(Exception):
    pass


def resource_id(obj: Obj) -> tuple[str, str, str, str]:
    group = obj["apiVersion"].rpartition("/")[0]
    metadata = obj["metadata"]
    return (group, obj["kind"], metadata.get("namespace", ""), metadata["name"])


def load_documents(path: Path) -> list[Obj]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    for doc in documents:
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= doc.keys():
            raise KustomizeError(f"{path}: a document without apiVersion, kind, metadata")
    return documents


def build(directory: Path) -> list[Obj]:
    """Render the Kustomization in ``directory``."""
    accumulated: list[Obj] = []
    _accumulate(directory, accumulated, "Kustomization")
    return accumulated


def _kustomization(directory: Path, kind: str) -> Obj:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("kind") != kind:
        raise KustomizeError(f"{path}: expected kind {kind}")
    expected = KUSTOMIZATION if kind == "Kustomization" else COMPONENT
    if document.get("apiVersion") != expected:
        raise KustomizeError(f"{path}: a {kind} is apiVersion {expected}")
    unknown = set(document) - FIELDS[kind]
    if unknown:
        raise KustomizeError(f"{path}: fields this renderer does not implement: {unknown}")
    return document


def _inside(directory: Path, name: str) -> Path:
    path = (directory / name).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise KustomizeError(f"{name}: file is not in or below {directory} (load restrictor)")
    return path


def _add(accumulated: list[Obj], objects: Iterable[Obj]) -> None:
    seen = {resource_id(obj) for obj in accumulated}
    for obj in objects:
        if resource_id(obj) in seen:
            raise KustomizeError(f"may not add resource with an already registered id: {obj}")
        seen.add(resource_id(obj))
        accumulated.append(obj)


def _accumulate(directory: Path, accumulated: list[Obj], kind: str) -> None:
    kustomization = _kustomization(directory, kind)
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            _add(accumulated, build(path))
        else:
            _add(accumulated, load_documents(_inside(directory, entry)))
    for entry in kustomization.get("components", []):
        _accumulate((directory / entry).resolve(), accumulated, "Component")
    for generator in kustomization.get("configMapGenerator", []):
        _add(accumulated, [_config_map(directory, generator)])
    for patch in kustomization.get("patches", []):
        _patch(directory, accumulated, patch)
    for image in kustomization.get("images", []):
        _image(accumulated, image)


def _config_map(directory: Path, generator: Obj) -> Obj:
    unknown = set(generator) - {"name", "namespace", "files", "options"}
    options = generator.get("options", {})
    unknown |= set(options) - {"disableNameSuffixHash", "labels", "annotations"}
    if unknown:
        raise KustomizeError(f"configMapGenerator fields not implemented: {unknown}")
    if options.get("disableNameSuffixHash") is not True:
        raise KustomizeError("configMapGenerator: only disableNameSuffixHash: true is implemented")
    data = {}
    for entry in generator["files"]:
        key, _, name = entry.rpartition("=") if "=" in entry else ("", "", entry)
        path = _inside(directory, name)
        data[key or path.name] = path.read_text(encoding="utf-8")
    metadata: Obj = {"name": generator["name"]}
    if "namespace" in generator:
        metadata["namespace"] = generator["namespace"]
    for field in ("labels", "annotations"):
        if field in options:
            metadata[field] = dict(options[field])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _selected(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    checks = {
        "group": group,
        "version": version,
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"].get("namespace", ""),
    }
    unknown = set(target) - set(checks)
    if unknown:
        raise KustomizeError(f"patch target fields not implemented: {unknown}")
    return all(checks[field] == value for field, value in target.items())


def _patch(directory: Path, accumulated: list[Obj], entry: Obj) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"patch fields not implemented: {unknown}")
    if "path" in entry:
        text = _inside(directory, entry["path"]).read_text(encoding="utf-8")
    else:
        text = entry["patch"]
    body = yaml.safe_load(text)
    if isinstance(body, list):
        targets = [obj for obj in accumulated if _selected(obj, entry.get("target") or {})]
        if "target" not in entry or not targets:
            raise KustomizeError(f"JSON 6902 patch without a matching target: {entry}")
        for obj in targets:
            patched = json_patch(obj, body)
            accumulated[accumulated.index(obj)] = patched
        return
    if isinstance(body, dict) and body.get("$patch") == "delete" and "target" not in entry:
        wanted = resource_id(body)
        matches = [obj for obj in accumulated if resource_id(obj) == wanted]
        if len(matches) != 1:
            raise KustomizeError(f"failed to find unique target for patch {wanted}")
        accumulated.remove(matches[0])
        return
    raise KustomizeError(f"patch form not implemented (only JSON 6902 and $patch: delete): {entry}")


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"bad JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def json_patch(obj: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902 add, remove, replace, test."""
    result = copy.deepcopy(obj)
    for operation in operations:
        parts = _pointer(operation["path"])
        parent: Any = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        op = operation["op"]
        if op == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != operation["value"]:
                raise KustomizeError(f"test failed at {operation['path']!r}: {current!r}")
            continue
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op == "add":
                parent.insert(index, operation["value"])
            elif op == "replace":
                parent[index] = operation["value"]
            elif op == "remove":
                del parent[index]
            else:
                raise KustomizeError(f"op {op!r} not implemented")
            continue
        if op in ("replace", "remove") and last not in parent:
            raise KustomizeError(f"{op} of a missing path {operation['path']!r}")
        if op in ("add", "replace"):
            parent[last] = operation["value"]
        elif op == "remove":
            del parent[last]
        else:
            raise KustomizeError(f"op {op!r} not implemented")
    return result


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` (a registry port is part of the name)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _image(accumulated: list[Obj], entry: Obj) -> None:
    unknown = set(entry) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"images fields not implemented: {unknown}")
    for obj in accumulated:
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            name, tag, digest = split_image(container["image"])
            if name != entry["name"]:
                continue
            name = entry.get("newName", name)
            if "digest" in entry:
                container["image"] = f"{name}@{entry['digest']}"
            else:
                tag = entry.get("newTag", tag)
                image = f"{name}:{tag}" if tag else name
                container["image"] = f"{image}@{digest}" if digest else image
