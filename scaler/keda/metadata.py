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
| ``targetBandwidthPerReplica`` | relayed bytes/s per replica (``200Mbit``, ``25MB``) | off |
| ``minReplicas`` / ``maxReplicas`` | bounds of the exported desired replicas | the flags |
| ``activationAllocations`` | active while allocations exceed this | 0 |
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from scaler.common.names import is_dns_label, is_dns_subdomain
from scaler.common.units import parse_bandwidth
from scaler.scaling import ALLOCATIONS, BANDWIDTH, Metric, ScalingPolicy

GATEWAY: Final = "gateway"
NAMESPACE: Final = "namespace"
TARGET_PER_REPLICA: Final = "targetPerReplica"
TARGET_BANDWIDTH_PER_REPLICA: Final = "targetBandwidthPerReplica"
MIN_REPLICAS: Final = "minReplicas"
MAX_REPLICAS: Final = "maxReplicas"
ACTIVATION_ALLOCATIONS: Final = "activationAllocations"
KEYS: Final = (
    GATEWAY,
    NAMESPACE,
    TARGET_PER_REPLICA,
    TARGET_BANDWIDTH_PER_REPLICA,
    MIN_REPLICAS,
    MAX_REPLICAS,
    ACTIVATION_ALLOCATIONS,
)

METRIC_PREFIX: Final = "stunner-allocations"
BANDWIDTH_METRIC_PREFIX: Final = "stunner-bandwidth"
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
        return self._named(METRIC_PREFIX)

    @property
    def bandwidth_metric_name(self) -> str:
        """The relayed bytes/s metric, named after the same selection."""
        return self._named(BANDWIDTH_METRIC_PREFIX)

    @property
    def metrics(self) -> dict[Metric, str]:
        """The trigger's metrics by name: allocations, and bandwidth when it has a target."""
        names: dict[Metric, str] = {ALLOCATIONS: self.metric_name}
        if self.policy.target_bandwidth_per_replica is not None:
            names[BANDWIDTH] = self.bandwidth_metric_name
        return names

    def _named(self, prefix: str) -> str:
        parts = [prefix]
        if self.namespace is not None:
            parts.append(self.namespace)
        if self.gateway is not None:
            parts.append(self.gateway)
        return "-".join(parts)

    def is_active(self, allocations: int) -> bool:
        return allocations > self.activation

    def names_metric(self, requested: str) -> bool:
        """Whether ``requested`` is this trigger's metric, in any case, with or without ``sN-``."""
        return self.metric_named(requested) is not None

    def metric_named(self, requested: str) -> Metric | None:
        """Which of the trigger's :attr:`metrics` ``requested`` names, in any case, with or
        without KEDA's ``sN-`` prefix; None for anything else."""
        name = requested.strip().lower()
        indexed = _TRIGGER_INDEX.fullmatch(name)
        candidates = (name, indexed.group(1)) if indexed is not None else (name,)
        for metric, wanted in self.metrics.items():
            if wanted in candidates:
                return metric
        return None


def parse_trigger(metadata: Mapping[str, str], defaults: ScalingPolicy) -> Trigger:
    """Read a trigger's metadata over ``defaults`` (the scaler's flags)."""
    gateway = _name(metadata, GATEWAY, is_dns_subdomain, "a gateway name (lowercase RFC 1123)")
    namespace = _name(metadata, NAMESPACE, is_dns_label, "a namespace name (RFC 1123 label)")
    target = _number(metadata, TARGET_PER_REPLICA, defaults.target_per_replica, minimum=1)
    bandwidth = _bandwidth(metadata, defaults.target_bandwidth_per_replica)
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
    return Trigger(gateway, namespace, ScalingPolicy(low, high, target, bandwidth), activation)


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


def _bandwidth(metadata: Mapping[str, str], default: int | None) -> int | None:
    raw = metadata.get(TARGET_BANDWIDTH_PER_REPLICA)
    if raw is None:
        return default
    try:
        return parse_bandwidth(raw)
    except ValueError as error:
        raise MetadataError(TARGET_BANDWIDTH_PER_REPLICA, str(error)) from None


def _origin(metadata: Mapping[str, str], key: str, flag: str) -> str:
    return "" if key in metadata else f", the {flag} default"
