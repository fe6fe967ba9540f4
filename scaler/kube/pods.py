"""The relay pods as the Kubernetes API shows them: pure and synchronous.

:class:`PodView` is fed by the watch (:mod:`scaler.kube.watch`) with the pod objects of
a list and then the watch events. It answers which relay pods exist, which are ready,
and what deletion cost each one carries now, and it says which pods went away, so their
relays leave the fleet at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from scaler.fleet import RelayKey

POD_DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
# Pods in these phases never run again: their relays are gone for good.
FINISHED_PHASES: Final = frozenset({"Succeeded", "Failed"})


class PodObjectError(ValueError):
    """A pod object without the fields every pod has (namespace, name)."""


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the scaler needs of one pod object."""

    namespace: str
    name: str
    uid: str
    phase: str
    ready: bool
    terminating: bool  # metadata.deletionTimestamp is set
    deletion_cost: int | None  # the annotation's value; None when absent or not an int32
    ips: tuple[str, ...] = ()  # status.podIPs (status.podIP): where its reports come from

    @property
    def key(self) -> RelayKey:
        return (self.namespace, self.name)

    @property
    def alive(self) -> bool:
        """Exists, is not being deleted and has not finished: its relay may be serving."""
        return not self.terminating and self.phase not in FINISHED_PHASES


def pod_info(obj: Mapping[str, Any]) -> PodInfo:
    """Read a pod object (a watch event's ``object`` or a list item, as JSON)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise PodObjectError("pod object without metadata")
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        raise PodObjectError("pod object without metadata.namespace and metadata.name")
    status = obj.get("status")
    status = status if isinstance(status, Mapping) else {}
    annotations = metadata.get("annotations")
    annotations = annotations if isinstance(annotations, Mapping) else {}
    return PodInfo(
        namespace=namespace,
        name=name,
        uid=str(metadata.get("uid") or ""),
        phase=str(status.get("phase") or "Pending"),
        ready=_ready(status),
        terminating=metadata.get("deletionTimestamp") is not None,
        deletion_cost=parse_cost(annotations.get(POD_DELETION_COST)),
        ips=_ips(status),
    )


def _ips(status: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    listed = status.get("podIPs")
    for entry in listed if isinstance(listed, list) else []:
        ip = entry.get("ip") if isinstance(entry, Mapping) else None
        if isinstance(ip, str) and ip and ip not in found:
            found.append(ip)
    single = status.get("podIP")
    if isinstance(single, str) and single and single not in found:
        found.append(single)
    return tuple(found)


def _ready(status: Mapping[str, Any]) -> bool:
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return False
    for condition in conditions:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1


def parse_cost(value: object) -> int | None:
    """The annotation's int32, as the ReplicaSet controller reads it; else None."""
    if not isinstance(value, str):
        return None
    try:
        cost = int(value.strip(), 10)
    except ValueError:
        return None
    return cost if INT32_MIN <= cost <= INT32_MAX else None


class PodView:
    """Every relay pod the watch has shown, keyed by (namespace, name)."""

    def __init__(self) -> None:
        self._pods: dict[RelayKey, PodInfo] = {}
        # True once a list has filled the view; a watch keeps it current from there.
        self.listed = False
        # The watched namespace, once the client knows it (scaler.binding reads it).
        self.namespace: str | None = None

    def replace(self, pods: Iterable[PodInfo]) -> list[RelayKey]:
        """Take a fresh list; return the pods that were known and are gone now."""
        fresh = {pod.key: pod for pod in pods}
        gone = [key for key in self._pods if key not in fresh]
        self._pods = fresh
        self.listed = True
        return gone

    def apply(self, event_type: str, pod: PodInfo) -> bool:
        """Apply a watch event (ADDED, MODIFIED, DELETED); True when the pod is gone."""
        if event_type == "DELETED":
            self._pods.pop(pod.key, None)
            return True
        self._pods[pod.key] = pod
        return False

    def get(self, key: RelayKey) -> PodInfo | None:
        return self._pods.get(key)

    def __len__(self) -> int:
        return len(self._pods)

    def __iter__(self) -> Iterator[PodInfo]:
        return iter(self._pods.values())

    def as_mapping(self) -> Mapping[RelayKey, PodInfo]:
        return self._pods

    def alive(self) -> frozenset[RelayKey]:
        """Pods that exist and are not being deleted: their silent relays are stale, not gone."""
        return frozenset(key for key, pod in self._pods.items() if pod.alive)
