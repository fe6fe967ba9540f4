"""Reports bound to the pods that send them (``--kubernetes``): pure, no client.

A bearer token is shared by every relay pod, so it proves a report comes from *a* relay,
not from *which* one. With the pod watch the scaler can check more: a report names its pod
(``relay.namespace``/``relay.pod``), and is accepted only when the watch knows that pod in
the watched namespace and the report's TCP peer address is one of that pod's IPs
(``status.podIPs``). Another pod cannot then speak for it, take it over with a forged
``started_at``, or set its deletion cost.

A pod the watch has not shown yet (just created, or the watch is still listing) gets a
retryable answer: the relay's pusher retries it like any 503 and is counted once the watch
catches up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class KnownPod(Protocol):
    @property
    def ips(self) -> Sequence[str]: ...


class PodDirectory(Protocol):
    """What the pod watch knows (:class:`scaler.kube.pods.PodView`)."""

    @property
    def namespace(self) -> str | None:
        """The watched namespace, once the client knows it."""

    def get(self, key: tuple[str, str]) -> KnownPod | None: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 403: not this pod's to send; 503: not known yet, retry
    result: str  # turnscale_reports_total{result}
    message: str


def normalized_ip(text: str | None) -> str | None:
    """The address as a canonical string; an IPv4-mapped IPv6 address as IPv4."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class PodBinding:
    """Decides whether the report of ``namespace/pod`` may come from ``peer``."""

    def __init__(self, pods: PodDirectory) -> None:
        self.pods = pods

    def refusal(self, namespace: str, pod: str, peer: str | None) -> Refusal | None:
        watched = self.pods.namespace
        if watched is not None and namespace != watched:
            return Refusal(
                403,
                "forbidden",
                f"relay.namespace {namespace!r} is not the watched namespace {watched!r}",
            )
        known = self.pods.get((namespace, pod))
        if known is None:
            return Refusal(
                503,
                "unknown_pod",
                f"pod {namespace}/{pod} is not (yet) known to the scaler's pod watch; retry",
            )
        address = normalized_ip(peer)
        if address is None or address not in {normalized_ip(ip) for ip in known.ips}:
            return Refusal(
                403,
                "forbidden",
                f"report for pod {namespace}/{pod} from {peer or 'an unknown address'}, "
                "which is not that pod's IP",
            )
        return None
