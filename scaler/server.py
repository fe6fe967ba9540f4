"""Running the scaler: the composition root, its listeners, and shutdown in order.

:class:`ScalerServer` builds every part of the scaler once, in this order, each getting
what it depends on as constructor arguments:

1. the fleet state: :class:`scaler.fleet.FleetState`, its :class:`scaler.ingest.ReportIngest`
   (with ``--kubernetes`` binding reports to the pods of one :class:`scaler.kube.pods.PodView`,
   :mod:`scaler.binding`) and the :class:`scaler.service.ScalerService` around them (with the
   flags' policy);
2. the per-gateway scaling policies: :class:`scaler.keda.policies.PolicyBook` (the flags,
   and the bounds KEDA triggers asked for);
3. with ``--kubernetes``, the exporter election: :class:`scaler.kube.leader.LeaderElector`
   (without it the scaler is its own exporter, :data:`scaler.exporter.ALONE`), then the
   exposition collector: :class:`scaler.exposition.FleetCollector` (reads 1, 2 and the
   exporter);
4. the gRPC front end: :class:`scaler.keda.grpc_server.GrpcFrontEnd` (records into 2);
5. with ``--kubernetes``, the integration: :class:`scaler.kube.integration.KubeIntegration`
   (plans deletion costs from 2 while the exporter leads, runs the election; its advisory
   readiness check);
6. the private registry (3, the gRPC statistics, 5, the process) and the readiness checks;
7. the HTTP app: :func:`scaler.http.create_app` (1, the registry, the readiness);
8. the sweeper: :class:`scaler.sweeper.Sweeper` (1, sparing what 5 says exists).

:meth:`ScalerServer.start` binds and starts them; :meth:`ScalerServer.stop` turns every
readiness check off first, then stops the integration, gRPC, HTTP and the sweeper.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from scaler import config as scaler_config
from scaler.binding import PodBinding
from scaler.common import logs, runtime
from scaler.common.flags import HostPort
from scaler.common.sockets import bind_tcp
from scaler.config import ScalerConfig
from scaler.exporter import ALONE
from scaler.exposition import FleetCollector, make_registry
from scaler.fleet import FleetState
from scaler.http import create_app
from scaler.ingest import ReportIngest
from scaler.keda.grpc_server import GrpcFrontEnd, TlsFiles
from scaler.keda.policies import PolicyBook
from scaler.readiness import Check, Readiness
from scaler.service import ScalerService
from scaler.sweeper import Sweeper, nothing_spared
from scaler.user_quota import FleetUserQuota, QuotaCollector

if TYPE_CHECKING:
    from scaler.common.kube.reflector import WatchTiming
    from scaler.kube.integration import KubeIntegration
    from scaler.kube.leader import LeaderElector
    from scaler.kube.pods import PodView

log = logs.get("scaler")

# How long in-flight gRPC calls may take to finish once the scaler stops.
GRPC_STOP_GRACE = 5.0
HTTP_CHECK = "http"
GRPC_CHECK = "grpc"


def grpc_tls(config: ScalerConfig) -> TlsFiles | None:
    if config.grpc_tls_cert is None or config.grpc_tls_key is None:
        return None
    return TlsFiles(config.grpc_tls_cert, config.grpc_tls_key, config.grpc_client_ca)


class ScalerServer:
    """The whole scaler, built from one :class:`ScalerConfig`; start, then stop once.

    ``kube_timing`` overrides the Kubernetes watch timing (tests).
    """

    def __init__(
        self,
        config: ScalerConfig,
        clock: Callable[[], float] | None = None,
        *,
        kube_timing: WatchTiming | None = None,
    ) -> None:
        clock = time.monotonic if clock is None else clock
        self.config = config
        fleet = FleetState(
            stale_after=config.stale_after,
            expire_after=config.expire_after,
            max_relays=config.max_relays,
            bandwidth_window=config.bandwidth_window,
        )
        # With --kubernetes, reports are bound to the pods the watch shows (one view, read
        # by ingest, filled by the integration).
        self.pods: PodView | None = None
        binding = None
        if config.kubernetes is not None:
            from scaler.kube.pods import PodView

            self.pods = PodView()
            binding = PodBinding(self.pods)
        # --fleet-user-quota: per-user counts summed over the fleet, answered per report.
        self.user_quota = (
            FleetUserQuota(config.fleet_user_quota) if config.fleet_user_quota else None
        )
        ingest = ReportIngest(fleet, config.token, binding=binding, user_quota=self.user_quota)
        self.service = ScalerService(fleet, ingest, config.policy, clock)
        self.policies = PolicyBook(config.policy, clock=clock)
        self.leader: LeaderElector | None = None
        if config.kubernetes is not None:
            # Imported only here: a scaler without --kubernetes never loads the client.
            from scaler.kube.leader import LeaderElector

            self.leader = LeaderElector(
                name=config.kubernetes.lease_name, timing=config.kubernetes.lease
            )
        self.collector = FleetCollector(
            self.service.fleet,
            self.service.ingest.stats,
            self.policies,
            clock,
            self.leader if self.leader is not None else ALONE,
        )
        self.grpc = GrpcFrontEnd(self.service, self.policies, grpc_tls(config))
        checks = [Check(HTTP_CHECK), Check(GRPC_CHECK)]
        collectors: list[Collector] = [self.collector, self.grpc.stats]
        exporter = self.collector.exporter
        collectors.append(
            QuotaCollector(ingest.refusals, self.user_quota, lambda: exporter.leading)
        )
        self.kube: KubeIntegration | None = None
        if config.kubernetes is not None:
            assert self.leader is not None and self.pods is not None
            from scaler.common.kube.reflector import DEFAULT_TIMING
            from scaler.kube import integration

            kube_check = Check(integration.CHECK, advisory=True)
            self.kube = integration.KubeIntegration(
                self.service,
                config.kubernetes,
                self.policies,
                kube_check,
                leader=self.leader,
                view=self.pods,
                timing=kube_timing or DEFAULT_TIMING,
            )
            checks.append(kube_check)
            collectors.append(self.kube)
        self.registry: CollectorRegistry = make_registry(*collectors)
        self.readiness = Readiness(*checks)
        self.app = create_app(self.service, self.registry, self.readiness)
        self.sweeper = Sweeper(
            self.service, self.kube.spared if self.kube is not None else nothing_spared
        )
        self.grpc_stop_grace = GRPC_STOP_GRACE
        self.http_address: HostPort | None = None
        self.grpc_address: HostPort | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        sock = bind_tcp(self.config.http.host, self.config.http.port)
        host, port = sock.getsockname()[:2]
        self.http_address = HostPort(host, port)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        self.sweeper.start()
        await web.SockSite(self._runner, sock).start()
        self.readiness[HTTP_CHECK].ok = True
        try:
            self.grpc_address = await self.grpc.start(self.config.grpc)
        except BaseException:
            await self._stop_http()
            raise
        self.readiness[GRPC_CHECK].ok = True
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
            target_bandwidth_per_replica=self.config.policy.target_bandwidth_per_replica,
            bandwidth_window=self.config.bandwidth_window,
            auth="token" if self.config.token else "none",
            kubernetes="on" if self.kube is not None else "off",
            fleet_user_quota=self.config.fleet_user_quota,
        )
        if self.config.open_reports and self.config.token is None and self.kube is None:
            log.warning(
                "reports accepted from anyone",
                http=str(self.http_address),
                why="--insecure-open-reports: whoever reaches this port decides how many "
                "relays run; use --token-file or --kubernetes outside a lab",
            )

    async def stop(self) -> None:
        """Turn not ready first, so load balancers stop sending, then close listeners."""
        self.readiness.fail_all()
        if self.kube is not None:
            await self.kube.stop()
        if self.grpc_address is not None:
            # Health NOT_SERVING first, KEDA's streams end, then up to the grace period.
            await self.grpc.stop(self.grpc_stop_grace)
            self.grpc_address = None
        await self._stop_http()
        log.info("scaler stopped")

    async def _stop_http(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.sweeper.stop()


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
