"""kubernetes-asyncio client wiring: in-cluster service account or a kubeconfig.

Imported only with ``--kubernetes``, so a command without it never loads the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from scaler.common.kube.access import KubeAccess

DEFAULT_NAMESPACE = "default"


class ClientSetupError(Exception):
    """The credentials could not be loaded (a broken kubeconfig, a missing token)."""


@dataclass
class KubeClient:
    api_client: Any  # kubernetes_asyncio.client.ApiClient
    core: Any  # kubernetes_asyncio.client.CoreV1Api
    namespace: str  # the namespace the command works in
    server: str  # the API server's URL, for logs

    async def close(self) -> None:
        await self.api_client.close()


async def connect(settings: KubeAccess) -> KubeClient:
    """Build the client; raise :class:`ClientSetupError` naming what is wrong."""
    configuration = client.Configuration()
    try:
        if settings.kubeconfig is None:
            account = settings.service_account_dir
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration,
                token_filename=str(account / "token"),
                cert_filename=str(account / "ca.crt"),
            )
            namespace = settings.namespace or _own_namespace(settings)
        else:
            loader = await config.load_kube_config(
                config_file=str(settings.kubeconfig),
                client_configuration=configuration,
                persist_config=False,
            )
            context = loader.current_context or {}
            namespace = settings.namespace or str(
                (context.get("context") or {}).get("namespace") or DEFAULT_NAMESPACE
            )
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        source = "the in-cluster service account" if settings.in_cluster else settings.kubeconfig
        raise ClientSetupError(f"cannot load Kubernetes credentials from {source}: {exc}") from exc
    api_client = client.ApiClient(configuration)
    core = client.CoreV1Api(api_client)
    return KubeClient(api_client, core, namespace, str(configuration.host))


def _own_namespace(settings: KubeAccess) -> str:
    try:
        text = (settings.service_account_dir / "namespace").read_text(encoding="utf-8")
    except OSError:
        return DEFAULT_NAMESPACE
    return text.strip() or DEFAULT_NAMESPACE
