"""Where the Kubernetes API credentials come from: pure, no kubernetes-asyncio.

Decided at start-up, so a command started with ``--kubernetes`` outside a cluster and
without a kubeconfig is one clear error naming the flag rather than a watch that fails
forever.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scaler.common.flags import ConfigError

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG: Final = Path("~/.kube/config")


@dataclass(frozen=True, slots=True)
class KubeAccess:
    """The API's credentials; ``kubeconfig`` None means the pod's service account."""

    kubeconfig: Path | None
    # Empty: the pod's own namespace (in-cluster) or the kubeconfig context's.
    namespace: str = ""
    service_account_dir: Path = SERVICE_ACCOUNT_DIR

    @property
    def in_cluster(self) -> bool:
        return self.kubeconfig is None


def resolve_access(
    *,
    kubeconfig: Path | None,
    namespace: str,
    environ: Mapping[str, str],
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> KubeAccess:
    """Pick the credentials: ``--kubeconfig``, else the pod's service account when running
    in a pod, else ``$KUBECONFIG`` or ``~/.kube/config``, as kubectl would."""
    if kubeconfig is not None:
        _check_readable("--kubeconfig", kubeconfig)
        return KubeAccess(kubeconfig, namespace, service_account_dir)
    if environ.get("KUBERNETES_SERVICE_HOST") and environ.get("KUBERNETES_SERVICE_PORT"):
        token = service_account_dir / "token"
        if not token.is_file():
            raise ConfigError(
                f"--kubernetes: running in a pod but {str(token)!r} is missing; mount the "
                "service account token (automountServiceAccountToken: true) or give --kubeconfig"
            )
        return KubeAccess(None, namespace, service_account_dir)
    candidates = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p.strip()]
    path = Path(candidates[0]) if candidates else DEFAULT_KUBECONFIG.expanduser()
    if not path.is_file():
        raise ConfigError(
            "--kubernetes: not running in a pod (KUBERNETES_SERVICE_HOST is unset) and no "
            f"kubeconfig at {str(path)!r}; give --kubeconfig PATH"
        )
    _check_readable("--kubernetes (kubeconfig)", path)
    return KubeAccess(path, namespace, service_account_dir)


def _check_readable(flag: str, path: Path) -> None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
