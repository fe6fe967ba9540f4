"""Running the scaler: bind listeners, serve until told to stop, shut down in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from scaler import config as scaler_config
from scaler.common import logs, runtime
from scaler.common.flags import HostPort
from scaler.common.sockets import bind_tcp
from scaler.config import ScalerConfig
from scaler.http import create_app
from scaler.keda.grpc_server import GrpcFrontEnd, TlsFiles
from scaler.service import ScalerService

if TYPE_CHECKING:
    from scaler.kube.integration import KubeIntegration

log = logs.get("scaler")

# How long in-flight gRPC calls may take to finish once the scaler stops.
GRPC_STOP_GRACE = 5.0


def grpc_tls(config: ScalerConfig) -> TlsFiles | None:
    if config.grpc_tls_cert is None or config.grpc_tls_key is None:
        return None
    return TlsFiles(config.grpc_tls_cert, config.grpc_tls_key, config.grpc_client_ca)


class ScalerServer:
    """The scaler's listeners around one :class:`ScalerService`."""

    def __init__(self, config: ScalerConfig, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.service = ScalerService(config) if clock is None else ScalerService(config, clock)
        self.service.readiness["grpc"] = False
        self._runner: web.AppRunner | None = None
        self.http_address: HostPort | None = None
        self.grpc = GrpcFrontEnd(self.service, grpc_tls(config))
        self.grpc_address: HostPort | None = None
        self.grpc_stop_grace = GRPC_STOP_GRACE
        self.kube: KubeIntegration | None = None
        if config.kubernetes is not None:
            # Imported only here: a scaler without --kubernetes never loads the client.
            from scaler.kube.integration import KubeIntegration

            self.kube = KubeIntegration(self.service, config.kubernetes)

    async def start(self) -> None:
        sock = bind_tcp(self.config.http.host, self.config.http.port)
        host, port = sock.getsockname()[:2]
        self.http_address = HostPort(host, port)
        self._runner = web.AppRunner(
            create_app(self.service), access_log=None, shutdown_timeout=5.0
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.service.readiness["http"] = True
        try:
            self.grpc_address = await self.grpc.start(self.config.grpc)
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.service.readiness["grpc"] = True
        if self.kube is not None:
            await self.kube.start()  # in the background: never waits on the API
        log.info(
            "scaler serving",
            http=str(self.http_address),
            grpc=str(self.grpc_address),
            grpc_tls=self.grpc.tls.mode if self.grpc.tls else "none",
            min_replicas=self.config.policy.min_replicas,
            max_replicas=self.config.policy.max_replicas,
            target_per_replica=self.config.policy.target_per_replica,
            auth="token" if self.config.token else "none",
            kubernetes="on" if self.kube is not None else "off",
        )

    async def stop(self) -> None:
        """Turn not ready first, so load balancers stop sending, then close listeners."""
        for check in self.service.readiness:
            self.service.readiness[check] = False
        if self.kube is not None:
            await self.kube.stop()
        if self.grpc_address is not None:
            # Health NOT_SERVING first, KEDA's streams end, then up to the grace period.
            await self.grpc.stop(self.grpc_stop_grace)
            self.grpc_address = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("scaler stopped")


async def serve(config: ScalerConfig) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = ScalerServer(config)
    await server.start()
    try:
        await runtime.stop_requested()
    finally:
        await server.stop()


def main(argv: Sequence[str]) -> None:
    """``turnscale scaler``."""
    runtime.run_command("turnscale scaler", argv, scaler_config.load, serve)
