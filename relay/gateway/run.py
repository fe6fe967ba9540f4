"""A relay configured from Gateway API objects: from files, or live from Kubernetes.

:class:`FileGateway` owns the :class:`relay.net.server.RelayServer` built from the translated
settings and the :class:`relay.gateway.peers.ServiceResolver` that keeps its peer policy in
step with the routed Services' addresses; :func:`serve_files` runs both until the relay's
drain ends (:func:`relay.net.server.serve`). :func:`serve_live` does the same with a
:class:`relay.gateway.live.LiveGateway` watching the Kubernetes API.
"""

from __future__ import annotations

from relay.config import RelayConfig
from relay.gateway.options import GatewayOptions
from relay.gateway.peers import Peers, Resolve, ServiceResolver, resolve_dns
from relay.net.server import RelayServer, StartupError, serve
from scaler.common import logs

__all__ = ["FileGateway", "serve_files", "serve_live"]

log = logs.get("relay.gateway")


class FileGateway:
    """The relay and its Service lookups, from the objects of ``--config`` (``options``)."""

    def __init__(
        self,
        config: RelayConfig,
        options: GatewayOptions,
        *,
        resolve: Resolve = resolve_dns,
        **server_options: object,
    ) -> None:
        if options.settings is None:
            raise ValueError("FileGateway needs the options of --config")
        settings = options.settings
        self.server = RelayServer(config, **server_options)  # type: ignore[arg-type]
        self.peers = Peers(
            settings.static_peers,
            settings.services,
            allow_loopback=config.allow_loopback_peers,
        )
        self.resolver = ServiceResolver(
            self.peers, self._peers_changed, interval=options.resolve_interval, resolve=resolve
        )
        log.info(
            "gateway configuration loaded",
            files=[str(path) for path in options.files],
            gateway=f"{settings.namespace}/{settings.name}",
            gateway_config=f"{settings.config[0]}/{settings.config[1]}",
            listeners=[f"{item.name}={item.transport}:{item.port}" for item in settings.listeners],
            routes=[f"{route.namespace}/{route.name}" for route in settings.routes],
            services=[backend.dns_name for backend in settings.services],
            static_peers=[str(rule) for rule in settings.static_peers],
        )

    def _peers_changed(self) -> None:
        policy = self.peers.policy()
        self.server.set_peer_policy(policy)
        log.info(
            "peers changed",
            addresses={
                f"{name}.{namespace}.svc": sorted(found)
                for (namespace, name), found in sorted(self.peers.addresses.items())
            },
        )

    async def start(self) -> None:
        """Start looking the Services up (the first lookups go out at once)."""
        self.resolver.start()

    async def stop(self) -> None:
        await self.resolver.stop()


async def serve_files(config: RelayConfig, options: GatewayOptions) -> None:
    """Serve the relay of ``--config`` until SIGTERM/SIGINT and its drain."""
    gateway = FileGateway(config, options)
    await gateway.start()
    try:
        await serve(config, gateway.server)
    finally:
        await gateway.stop()


async def serve_live(config: RelayConfig, options: GatewayOptions) -> None:
    """Serve the relay of ``--kubernetes`` until SIGTERM/SIGINT and its drain."""
    from relay.gateway.kube import Apis
    from relay.gateway.live import LiveGateway
    from scaler.common.kube.client import ClientSetupError, connect

    assert options.kubernetes is not None, "--kubernetes"
    try:
        kube = await connect(options.kubernetes)
    except ClientSetupError as exc:
        raise StartupError(str(exc)) from None
    server = RelayServer(config)
    live = LiveGateway(server, options, Apis(kube.api_client))
    log.info("watching the gateway", server=kube.server, gateway=f"{live.key[0]}/{live.key[1]}")
    try:
        await serve(config, server, started=live.start)
    finally:
        await live.stop()
        await kube.close()
