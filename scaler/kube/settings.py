"""What ``--kubernetes`` and its companion flags resolve to: pure, no kubernetes-asyncio.

Where the API credentials come from is decided at start-up, so a scaler started with
``--kubernetes`` outside a cluster and without a kubeconfig is one clear error naming
the flag rather than a watch that fails forever.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scaler.flags import ConfigError
from scaler.kube.selector import Selector, SelectorError, parse_selector
from scaler.wire import DNS_LABEL

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG: Final = Path("~/.kube/config")
DEFAULT_SELECTOR: Final = "app=stunner"


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """The Kubernetes integration's settings; ``kubeconfig`` None means in-cluster."""

    kubeconfig: Path | None
    relay_selector: Selector
    # Empty: the scaler's own namespace (in-cluster) or the kubeconfig context's.
    relay_namespace: str
    # How often deletion costs are planned; also the least time between two patches
    # of one pod. 0 turns deletion costs off.
    deletion_cost_interval: float
    service_account_dir: Path = SERVICE_ACCOUNT_DIR

    @property
    def in_cluster(self) -> bool:
        return self.kubeconfig is None


def selector_flag(text: str) -> Selector:
    """``--relay-selector`` type: argparse turns the ValueError into a message naming it."""
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise ValueError(str(exc)) from None


def namespace_flag(text: str) -> str:
    value = text.strip()
    if value and (len(value) > 63 or re.fullmatch(DNS_LABEL, value) is None):
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
) -> KubeSettings:
    """Pick the credentials: ``--kubeconfig``, else the pod's service account when running
    in a pod, else ``$KUBECONFIG`` or ``~/.kube/config``, as kubectl would."""
    if deletion_cost_interval < 0:
        raise ConfigError("--deletion-cost-interval must not be negative (0 turns it off)")
    settings = KubeSettings(
        kubeconfig,
        relay_selector,
        relay_namespace,
        deletion_cost_interval,
        service_account_dir,
    )
    if kubeconfig is not None:
        _check_readable("--kubeconfig", kubeconfig)
        return settings
    if environ.get("KUBERNETES_SERVICE_HOST") and environ.get("KUBERNETES_SERVICE_PORT"):
        token = service_account_dir / "token"
        if not token.is_file():
            raise ConfigError(
                f"--kubernetes: running in a pod but {str(token)!r} is missing; mount the "
                "service account token (automountServiceAccountToken: true) or give --kubeconfig"
            )
        return settings
    candidates = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p.strip()]
    path = Path(candidates[0]) if candidates else DEFAULT_KUBECONFIG.expanduser()
    if not path.is_file():
        raise ConfigError(
            "--kubernetes: not running in a pod (KUBERNETES_SERVICE_HOST is unset) and no "
            f"kubeconfig at {str(path)!r}; give --kubeconfig PATH"
        )
    _check_readable("--kubernetes (kubeconfig)", path)
    return KubeSettings(
        path, relay_selector, relay_namespace, deletion_cost_interval, service_account_dir
    )


def _check_readable(flag: str, path: Path) -> None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
