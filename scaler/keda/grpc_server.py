"""The scaler's gRPC listener: KEDA's external scaler and ``grpc.health.v1.Health``.

A ``grpc.aio`` server on the scaler's event loop (uvloop in production), so the
servicers read the fleet state the HTTP ingest writes without locks or threads.
Calls are counted by an interceptor into :class:`scaler.keda.stats.GrpcStats`, a
collector of the scaler's registry; every trigger's policy goes to the
:class:`scaler.keda.policies.PolicyBook` the exported desired replicas read.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from scaler.common.flags import HostPort
from scaler.keda.policies import PolicyBook
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from scaler.keda.servicer import SERVICE_NAME, ExternalScalerServicer
from scaler.keda.stats import UNKNOWN_METHOD, GrpcStats, method_label
from scaler.service import ScalerService

HEALTH_SERVICE: Final = "grpc.health.v1.Health"
UNARY_METHODS: Final = (
    f"{SERVICE_NAME}/IsActive",
    f"{SERVICE_NAME}/GetMetricSpec",
    f"{SERVICE_NAME}/GetMetrics",
    f"{HEALTH_SERVICE}/Check",
)
# Exported at zero from the start (StreamMetricSpec only ever answers UNIMPLEMENTED).
STREAM_METHODS: Final = (f"{SERVICE_NAME}/StreamIsActive", f"{HEALTH_SERVICE}/Watch")

SERVER_OPTIONS: Final[list[tuple[str, int]]] = [
    # gRPC sets SO_REUSEPORT by default: a second scaler would share the port silently.
    ("grpc.so_reuseport", 0),
    # Ping idle connections, so a KEDA that vanished without closing frees its streams.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # KEDA's requests are a few hundred bytes.
    ("grpc.max_receive_message_length", 1 << 20),
]


def _code(context: grpc.aio.ServicerContext) -> str:
    code = context.code()  # a grpc.StatusCode once set (abort() sets it), else None
    return "OK" if code is None else str(code.name)


class AccountingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every call by method and status code; times unary calls."""

    def __init__(self, stats: GrpcStats) -> None:
        self.stats = stats
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            self.stats.finished(UNKNOWN_METHOD, "UNIMPLEMENTED")
            return None
        method = method_label(details.method)
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            behavior = handler.unary_stream
            if inspect.isasyncgenfunction(behavior):
                wrapped = self._generator_stream(method, behavior)
            else:
                wrapped = self._writer_stream(method, behavior)
            return grpc.unary_stream_rpc_method_handler(
                wrapped,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client streaming: this server has none

    def _unary(self, method: str, behavior: Any) -> Any:
        stats = self.stats

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = "UNKNOWN"
            try:
                response = behavior(request, context)
                if inspect.isawaitable(response):
                    response = await response
                code = _code(context)
                return response
            except grpc.aio.AbortError:
                code = _code(context)
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                stats.finished(method, code, time.perf_counter() - start)

        return unary

    def _generator_stream(self, method: str, behavior: Any) -> Any:
        stats = self.stats

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            stats.stream_opened(method)
            code = "UNKNOWN"
            try:
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
                code = _code(context)
            except grpc.aio.AbortError:
                code = _code(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            finally:
                stats.stream_closed(method)
                stats.finished(method, code)

        return stream

    def _writer_stream(self, method: str, behavior: Any) -> Any:
        stats = self.stats

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> None:
            stats.stream_opened(method)
            code = "UNKNOWN"
            try:
                await behavior(request, context)
                code = _code(context)
            except grpc.aio.AbortError:
                code = _code(context)
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                stats.stream_closed(method)
                stats.finished(method, code)

        return stream


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for the gRPC listener; ``client_ca`` turns on mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )

    @property
    def mode(self) -> str:
        return "mutual-tls" if self.client_ca is not None else "tls"


class GrpcFrontEnd:
    """The gRPC server around one :class:`ScalerService`; start, then stop once.

    ``stats`` (its calls, by method and code) is for the scaler's registry to collect.
    """

    def __init__(
        self, service: ScalerService, policies: PolicyBook, tls: TlsFiles | None = None
    ) -> None:
        self.service = service
        self.policies = policies
        self.tls = tls
        self.stats = GrpcStats(UNARY_METHODS, STREAM_METHODS)
        # Only callers with a client certificate may set what /metrics exports.
        self.servicer = ExternalScalerServicer(
            service, policies, trusted_callers=tls is not None and tls.client_ca is not None
        )
        self.health = HealthServicer()
        self.address: HostPort | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self, address: HostPort) -> HostPort:
        """Bind ``address`` (port 0 picks a free port), serve, and report SERVING."""
        server = grpc.aio.server(
            interceptors=[AccountingInterceptor(self.stats)], options=SERVER_OPTIONS
        )
        pb_grpc.add_ExternalScalerServicer_to_server(self.servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        target = str(address)
        try:
            if self.tls is None:
                port = server.add_insecure_port(target)
            else:
                port = server.add_secure_port(target, self.tls.credentials())
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {target}: {exc}") from None
        if not port:
            raise OSError(f"cannot listen for gRPC on {target}")
        await server.start()
        self._server = server
        self.address = HostPort(address.host, port)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.address

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first, end the KEDA streams, then let calls finish within ``grace``."""
        await self.health.enter_graceful_shutdown()
        self.servicer.close_streams()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
