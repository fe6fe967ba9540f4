"""A real scaler (HTTP + gRPC on loopback, port 0) fed by real reports, for the KEDA tests."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2_grpc

from scaler.config import ScalerConfig
from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from scaler.server import ScalerServer
from tests.clock import FakeClock
from tests.reports import as_json, report
from tests.scaler.helpers import scaler_config
from tests.tools import require_tool

JSON = {"Content-Type": "application/json"}
GATEWAY = "stunner-gateway"
NAMESPACE = "stunner"
SCALER = "scaler.keda.test:9090"
# Bound on every wait for something the server does by itself.
TIMEOUT = 10.0


def ref(**metadata: str) -> pb.ScaledObjectRef:
    """A ScaledObjectRef as KEDA sends it: the trigger's whole metadata map."""
    return pb.ScaledObjectRef(
        name="relays",
        namespace=NAMESPACE,
        scalerMetadata={"scalerAddress": SCALER, **metadata},
    )


@dataclass
class Keda:
    """One running scaler, an HTTP session to feed it and a gRPC channel to ask it."""

    server: ScalerServer
    session: aiohttp.ClientSession
    channel: grpc.aio.Channel
    clock: FakeClock
    seqs: dict[str, int] = field(default_factory=dict)

    @property
    def stub(self) -> Any:
        return pb_grpc.ExternalScalerStub(self.channel)  # type: ignore[no-untyped-call]

    @property
    def health(self) -> Any:
        return health_pb2_grpc.HealthStub(self.channel)

    @property
    def base(self) -> str:
        return f"http://{self.server.http_address}"

    async def report(
        self,
        pod: str = "relay-a",
        *,
        udp: int = 0,
        tcp: int = 0,
        gateway: str = GATEWAY,
        namespace: str = NAMESPACE,
        draining: bool = False,
    ) -> None:
        """POST /v1/reports as the relay ``pod`` would, with its next seq."""
        seq = self.seqs[pod] = self.seqs.get(pod, 0) + 1
        body = as_json(
            report(
                pod,
                seq=seq,
                udp=udp,
                tcp=tcp,
                gateway=gateway,
                namespace=namespace,
                draining=draining,
            )
        )
        async with self.session.post(f"{self.base}/v1/reports", data=body, headers=JSON) as answer:
            assert answer.status == 202, await answer.text()

    async def metrics(self) -> str:
        async with self.session.get(f"{self.base}/metrics") as answer:
            assert answer.status == 200
            return await answer.text()

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with self.session.get(f"{self.base}{path}") as answer:
            return answer.status, await answer.json()

    async def metric_value(self, trigger: pb.ScaledObjectRef) -> int:
        spec: pb.GetMetricSpecResponse = await self.stub.GetMetricSpec(trigger)
        name = spec.metricSpecs[0].metricName
        request = pb.GetMetricsRequest(scaledObjectRef=trigger, metricName=name)
        answer: pb.GetMetricsResponse = await self.stub.GetMetrics(request)
        (value,) = answer.metricValues
        assert value.metricValueFloat == float(value.metricValue)
        return value.metricValue


@asynccontextmanager
async def running_scaler(
    config: ScalerConfig | None = None,
    *,
    channel: Callable[[str], grpc.aio.Channel] | None = None,
    **overrides: Any,
) -> AsyncIterator[Keda]:
    """Start a scaler on 127.0.0.1 port 0, yield a :class:`Keda`, stop everything."""
    config = config or scaler_config()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    clock = FakeClock()
    server = ScalerServer(config, clock)
    await server.start()
    assert server.grpc_address is not None
    target = str(server.grpc_address)
    grpc_channel = channel(target) if channel else grpc.aio.insecure_channel(target)
    session = aiohttp.ClientSession()
    try:
        yield Keda(server, session, grpc_channel, clock)
    finally:
        await grpc_channel.close()
        await session.close()
        await server.stop()


async def read(call: Any) -> Any:
    """The next message of a server stream, bounded by :data:`TIMEOUT`."""
    return await asyncio.wait_for(call.read(), TIMEOUT)


# ---- certificates ----------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost, and a client one."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def _openssl(directory: Path, *args: str) -> None:
    done = subprocess.run(
        [require_tool("openssl"), *args], cwd=directory, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def _ca(directory: Path, name: str) -> None:
    _openssl(
        directory,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )


def _leaf(directory: Path, name: str, ca: str, extensions: Mapping[str, str]) -> None:
    _openssl(
        directory,
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
    )
    (directory / f"{name}.ext").write_text(
        "".join(f"{key}={value}\n" for key, value in extensions.items())
    )
    _openssl(
        directory,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
    )


def make_pki(directory: Path) -> Pki:
    """Generate the certificates with the openssl CLI (no Python crypto package needed)."""
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _leaf(
        directory,
        "server",
        "ca",
        {"subjectAltName": "DNS:localhost,IP:127.0.0.1", "extendedKeyUsage": "serverAuth"},
    )
    _leaf(directory, "client", "ca", {"extendedKeyUsage": "clientAuth"})
    _leaf(directory, "other-client", "other-ca", {"extendedKeyUsage": "clientAuth"})
    return Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.crt",
        other_client_cert=directory / "other-client.crt",
        other_client_key=directory / "other-client.key",
    )
