"""A KEDA trigger's ``metadata`` map, read into a :class:`Trigger`: pure and synchronous.

KEDA sends the ScaledObject trigger's whole ``metadata`` map (``scalerAddress``,
``enableTLS`` ... included) with every call. The scaler reads the keys below and
ignores the rest; a malformed value is a :class:`MetadataError` naming its key,
which the servicer answers with INVALID_ARGUMENT.

| key | meaning | default |
|---|---|---|
| ``gateway`` | which relay fleet (the relays' ``relay.gateway``) | the whole fleet |
| ``namespace`` | only relays in this namespace | every namespace |
| ``targetPerReplica`` | allocations one replica should carry | ``--target-per-replica`` |
| ``minReplicas`` / ``maxReplicas`` | bounds of the exported desired replicas | the flags |
| ``activationAllocations`` | active while allocations exceed this | 0 |
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from scaler.common.names import is_dns_label, is_dns_subdomain
from scaler.scaling import ScalingPolicy

GATEWAY: Final = "gateway"
NAMESPACE: Final = "namespace"
TARGET_PER_REPLICA: Final = "targetPerReplica"
MIN_REPLICAS: Final = "minReplicas"
MAX_REPLICAS: Final = "maxReplicas"
ACTIVATION_ALLOCATIONS: Final = "activationAllocations"
KEYS: Final = (
    GATEWAY,
    NAMESPACE,
    TARGET_PER_REPLICA,
    MIN_REPLICAS,
    MAX_REPLICAS,
    ACTIVATION_ALLOCATIONS,
)

METRIC_PREFIX: Final = "stunner-allocations"
# Counts stay well inside the int64 fields of the KEDA messages.
MAX_NUMBER: Final = 1_000_000_000

_NUMBER = re.compile(r"[0-9]+")
# KEDA names a trigger's metric "s<trigger index>-<name>" in the HPA.
_TRIGGER_INDEX = re.compile(r"s[0-9]+-(.+)", re.IGNORECASE)


class MetadataError(ValueError):
    """A trigger metadata value the scaler cannot use; ``str()`` names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"scalerMetadata.{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class Trigger:
    """What one ScaledObject trigger asks of the scaler."""

    gateway: str | None
    namespace: str | None
    policy: ScalingPolicy
    activation: int

    @property
    def metric_name(self) -> str:
        """The trigger's metric: stable and lowercase, naming the selection it counts."""
        parts = [METRIC_PREFIX]
        if self.namespace is not None:
            parts.append(self.namespace)
        if self.gateway is not None:
            parts.append(self.gateway)
        return "-".join(parts)

    def is_active(self, allocations: int) -> bool:
        return allocations > self.activation

    def names_metric(self, requested: str) -> bool:
        """Whether ``requested`` is this trigger's metric, in any case, with or without ``sN-``."""
        wanted = self.metric_name
        name = requested.strip().lower()
        if name == wanted:
            return True
        indexed = _TRIGGER_INDEX.fullmatch(name)
        return indexed is not None and indexed.group(1) == wanted


def parse_trigger(metadata: Mapping[str, str], defaults: ScalingPolicy) -> Trigger:
    """Read a trigger's metadata over ``defaults`` (the scaler's flags)."""
    gateway = _name(metadata, GATEWAY, is_dns_subdomain, "a gateway name (lowercase RFC 1123)")
    namespace = _name(metadata, NAMESPACE, is_dns_label, "a namespace name (RFC 1123 label)")
    target = _number(metadata, TARGET_PER_REPLICA, defaults.target_per_replica, minimum=1)
    low = _number(metadata, MIN_REPLICAS, defaults.min_replicas, minimum=0)
    high = _number(metadata, MAX_REPLICAS, defaults.max_replicas, minimum=1)
    activation = _number(metadata, ACTIVATION_ALLOCATIONS, 0, minimum=0)
    if low > high:
        key = MAX_REPLICAS if MAX_REPLICAS in metadata else MIN_REPLICAS
        raise MetadataError(
            key,
            f"minReplicas ({low}{_origin(metadata, MIN_REPLICAS, '--min-replicas')}) is more "
            f"than maxReplicas ({high}{_origin(metadata, MAX_REPLICAS, '--max-replicas')})",
        )
    return Trigger(gateway, namespace, ScalingPolicy(low, high, target), activation)


def _name(
    metadata: Mapping[str, str], key: str, valid: Callable[[str], bool], what: str
) -> str | None:
    raw = metadata.get(key)
    if raw is None:
        return None
    value = raw.strip()
    if not value:
        raise MetadataError(key, f"is empty; leave the key out to count {_everything(key)}")
    if not valid(value):
        raise MetadataError(key, f"{raw!r} is not {what}")
    return value


def _everything(key: str) -> str:
    return "the whole fleet" if key == GATEWAY else "every namespace"


def _number(metadata: Mapping[str, str], key: str, default: int, *, minimum: int) -> int:
    raw = metadata.get(key)
    if raw is None:
        return default
    text = raw.strip()
    if _NUMBER.fullmatch(text) is None:
        raise MetadataError(key, f"{raw!r} is not a whole number")
    value = int(text)
    if not minimum <= value <= MAX_NUMBER:
        raise MetadataError(key, f"{value} is outside {minimum}..{MAX_NUMBER}")
    return value


def _origin(metadata: Mapping[str, str], key: str, flag: str) -> str:
    return "" if key in metadata else f", the {flag} default"
