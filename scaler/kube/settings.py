"""What ``--kubernetes`` and its companion flags resolve to: pure, no kubernetes-asyncio.

The API credentials are :class:`scaler.common.kube.access.KubeAccess` (shared with the
relay's Gateway API mode); the scaler adds which pods are relays and how often it plans
deletion costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scaler.common.flags import ConfigError
from scaler.common.kube.access import SERVICE_ACCOUNT_DIR, KubeAccess, resolve_access
from scaler.common.names import is_dns_label, is_dns_subdomain
from scaler.kube.selector import Selector, SelectorError, parse_selector

DEFAULT_LEASE_NAME: Final = "turnscale-scaler"


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Whole seconds, as a Lease stores them: ``lease_duration > renew_deadline >
    1.2 * retry_period``, ``retry_period >= 1`` (kubernetes-asyncio's rules)."""

    lease_duration: int = 15
    renew_deadline: int = 10
    retry_period: int = 2


DEFAULT_LEASE: Final = LeaseTiming()


def lease_timing(lease_duration: float, renew_deadline: float) -> LeaseTiming:
    """``--lease-duration`` and ``--renew-deadline``; the retry period follows from them."""
    if lease_duration != int(lease_duration) or renew_deadline != int(renew_deadline):
        raise ConfigError("--lease-duration and --renew-deadline take whole seconds")
    lease, renew = int(lease_duration), int(renew_deadline)
    if renew < 2:
        raise ConfigError(f"--renew-deadline ({renew}s) must be at least 2s")
    if lease <= renew:
        raise ConfigError(
            f"--lease-duration ({lease}s) must be longer than --renew-deadline ({renew}s): "
            "a leader that cannot renew must stop exporting before another can take over"
        )
    # Retries every 2 s (1 s for the shortest deadlines) fit several into a deadline.
    return LeaseTiming(lease, renew, 2 if renew >= 3 else 1)


DEFAULT_SELECTOR: Final = "app=stunner"


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """The Kubernetes integration's settings."""

    access: KubeAccess  # its namespace is where the relay pods are watched
    relay_selector: Selector
    # How often deletion costs are planned; also the least time between two patches
    # of one pod. 0 turns deletion costs off.
    deletion_cost_interval: float
    # The exporter Lease (scaler.kube.leader): in the relay namespace.
    lease_name: str = DEFAULT_LEASE_NAME
    lease: LeaseTiming = DEFAULT_LEASE

    @property
    def kubeconfig(self) -> Path | None:
        return self.access.kubeconfig

    @property
    def relay_namespace(self) -> str:
        """Empty: the scaler's own namespace (in-cluster) or the kubeconfig context's."""
        return self.access.namespace


def selector_flag(text: str) -> Selector:
    """``--relay-selector`` type: argparse turns the ValueError into a message naming it."""
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise ValueError(str(exc)) from None


def namespace_flag(text: str) -> str:
    value = text.strip()
    if value and not is_dns_label(value):
        raise ValueError(f"{text!r} is not a namespace name (lowercase RFC 1123 label)")
    return value


def resolve(
    *,
    kubeconfig: Path | None,
    relay_selector: Selector,
    relay_namespace: str,
    deletion_cost_interval: float,
    environ: Mapping[str, str],
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    lease_name: str = DEFAULT_LEASE_NAME,
    lease: LeaseTiming = DEFAULT_LEASE,
) -> KubeSettings:
    """The credentials (see :func:`resolve_access`) and the scaler's own settings."""
    if deletion_cost_interval < 0:
        raise ConfigError("--deletion-cost-interval must not be negative (0 turns it off)")
    access = resolve_access(
        kubeconfig=kubeconfig,
        namespace=relay_namespace,
        environ=environ,
        service_account_dir=service_account_dir,
    )
    if not is_dns_subdomain(lease_name):
        raise ConfigError(f"--lease-name {lease_name!r} is not a Kubernetes object name")
    return KubeSettings(access, relay_selector, deletion_cost_interval, lease_name, lease)
