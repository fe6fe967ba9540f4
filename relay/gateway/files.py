"""File mode: Gateway API objects from YAML files, Secrets from mounted directories.

``--config FILE`` (repeatable) names YAML files of one or more documents (``---``), each a
Gateway, GatewayClass, UDPRoute, GatewayConfig, StaticService or ReferenceGrant; a
``kind: List`` is read item by item. A document without ``metadata.namespace`` is in the
relay's ``--namespace``.

A Secret reference ``{name, namespace, key}`` is read from ``--secrets-dir``:
``DIR/NAMESPACE/NAME/KEY``, the layout of a Secret volume mounted at
``DIR/NAMESPACE/NAME`` (one file per key; the ``..data`` links kubelet adds are skipped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from relay.gateway.objects import GatewayError, GatewayObject, describe, parse
from relay.gateway.translate import Catalog

__all__ = ["SecretsDir", "load_catalog", "load_objects"]

#: Files read per Secret at most, and bytes per file: a mount holds a few small keys.
MAX_KEYS = 64
MAX_VALUE = 64 * 1024


def load_objects(paths: Sequence[Path], default_namespace: str) -> list[GatewayObject]:
    """Every object in ``paths``, checked; :class:`GatewayError` names file, document,
    object and field of the first problem."""
    objects: list[GatewayObject] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise GatewayError(f"{path}: cannot read it ({exc.__class__.__name__})") from None
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            raise GatewayError(f"{path}: not YAML{line}: {getattr(exc, 'problem', exc)}") from None
        for number, document in enumerate(documents, 1):
            if document is None:
                continue  # an empty document (a stray ---)
            for item in _items(document):
                try:
                    objects.append(parse(item, default_namespace))
                except GatewayError as exc:
                    raise GatewayError(f"{path} document {number}: {exc}", exc.reason) from None
    return objects


def _items(document: Any) -> list[Any]:
    if isinstance(document, dict) and document.get("kind") == "List":
        items = document.get("items")
        if not isinstance(items, list):
            raise GatewayError(f"{describe(document)}: items is not a list")
        return items
    return [document]


def load_catalog(paths: Sequence[Path], default_namespace: str) -> Catalog:
    """The objects of ``paths`` as a catalog (an object given twice is an error)."""
    if not paths:
        raise GatewayError("no --config file")
    return Catalog.of(load_objects(paths, default_namespace))


class SecretsDir:
    """Secrets mounted under one directory: ``DIR/NAMESPACE/NAME/KEY``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"SecretsDir({str(self.root)!r})"

    def secret(self, namespace: str, name: str) -> Mapping[str, str]:
        """The keys of the mounted Secret; LookupError (naming the path) when absent."""
        directory = self.root / namespace / name
        if not directory.is_dir():
            raise LookupError(f"not mounted (no directory {str(directory)!r})")
        keys: dict[str, str] = {}
        for entry in sorted(directory.iterdir())[:MAX_KEYS]:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            try:
                with entry.open("rb") as handle:
                    raw = handle.read(MAX_VALUE + 1)
            except OSError as exc:
                raise LookupError(f"cannot read {str(entry)!r} ({exc.strerror or exc})") from None
            if len(raw) > MAX_VALUE:
                raise LookupError(f"{str(entry)!r} is over {MAX_VALUE} bytes")
            try:
                keys[entry.name] = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise LookupError(f"{str(entry)!r} is not UTF-8 text") from None
        return keys
