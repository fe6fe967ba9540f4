"""gRPC TLS and mutual TLS (KEDA's enableTLS, caCert, tlsClientCert/tlsClientKey), with
certificates generated for the test, and the flags that turn them on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from scaler.common.flags import ConfigError
from scaler.config import ScalerConfig, load
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from tests.scaler.helpers import value
from tests.scaler.keda_helpers import (
    GATEWAY,
    NAMESPACE,
    TIMEOUT,
    Pki,
    make_pki,
    read,
    ref,
    running_scaler,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config(*flags: str | Path, environ: dict[str, str] | None = None) -> ScalerConfig:
    argv = ["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", *map(str, flags)]
    return load(argv, environ or {})


def credentials(
    pki: Pki, client: tuple[Path, Path] | None = None, root: Path | None = None
) -> grpc.ChannelCredentials:
    cert, key = client if client else (None, None)
    return grpc.ssl_channel_credentials(
        root_certificates=(root or pki.ca).read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


async def refused(target: str, creds: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status a client gets from one call over ``creds`` (None: plaintext)."""
    channel = (
        grpc.aio.insecure_channel(target)
        if creds is None
        else grpc.aio.secure_channel(target, creds)
    )
    async with channel:
        stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.IsActive(ref(), timeout=TIMEOUT)
        code: grpc.StatusCode = caught.value.code()
        return code


async def test_tls_serves_a_client_that_trusts_the_ca(pki: Pki) -> None:
    tls = config("--grpc-tls-cert", pki.server_cert, "--grpc-tls-key", pki.server_key)
    creds = credentials(pki)
    async with running_scaler(tls, channel=lambda t: grpc.aio.secure_channel(t, creds)) as keda:
        await keda.report(udp=7)
        assert await keda.metric_value(ref(gateway=GATEWAY)) == 7
        call = keda.stub.StreamIsActive(ref(gateway=GATEWAY))
        assert (await read(call)).result is True
        call.cancel()
        answer = await keda.health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        target = str(keda.server.grpc_address)
        assert await refused(target, None) == grpc.StatusCode.UNAVAILABLE
        distrusting = credentials(pki, root=pki.other_ca)
        assert await refused(target, distrusting) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_wants_a_client_certificate_from_the_client_ca(pki: Pki) -> None:
    mtls = config(
        "--grpc-tls-cert",
        pki.server_cert,
        "--grpc-tls-key",
        pki.server_key,
        "--grpc-client-ca",
        pki.ca,
    )
    creds = credentials(pki, client=(pki.client_cert, pki.client_key))
    async with running_scaler(mtls, channel=lambda t: grpc.aio.secure_channel(t, creds)) as keda:
        await keda.report(udp=3)
        assert await keda.metric_value(ref(gateway=GATEWAY)) == 3

        target = str(keda.server.grpc_address)
        assert await refused(target, credentials(pki)) == grpc.StatusCode.UNAVAILABLE
        stranger = credentials(pki, client=(pki.other_client_cert, pki.other_client_key))
        assert await refused(target, stranger) == grpc.StatusCode.UNAVAILABLE
        assert await refused(target, None) == grpc.StatusCode.UNAVAILABLE


async def test_over_mutual_tls_the_trigger_bounds_decide_the_exported_replicas(
    pki: Pki,
) -> None:
    mtls = config(
        *("--grpc-tls-cert", pki.server_cert, "--grpc-tls-key", pki.server_key),
        *("--grpc-client-ca", pki.ca),
    )
    creds = credentials(pki, client=(pki.client_cert, pki.client_key))
    async with running_scaler(mtls, channel=lambda t: grpc.aio.secure_channel(t, creds)) as keda:
        await keda.report(udp=250)
        await keda.report("relay-x", udp=250, gateway="other-gateway")

        async def desired(gateway: str) -> float | None:
            text = await keda.metrics()
            return value(
                text, "stunner_scaler_desired_replicas", gateway=gateway, namespace=NAMESPACE
            )

        assert await desired(GATEWAY) == 3  # the flags: 250 / 100, within 2..10
        trigger = ref(gateway=GATEWAY, targetPerReplica="50", maxReplicas="4")
        await keda.stub.GetMetricSpec(trigger)
        assert await desired(GATEWAY) == 4  # 250 / 50 = 5, clamped to the trigger's 4
        assert await desired("other-gateway") == 3  # another trigger's fleet keeps the flags


def test_the_flags_also_come_from_the_environment(pki: Pki) -> None:
    environ = {
        "TURNSCALE_GRPC_TLS_CERT": str(pki.server_cert),
        "TURNSCALE_GRPC_TLS_KEY": str(pki.server_key),
        "TURNSCALE_GRPC_CLIENT_CA": str(pki.ca),
    }
    loaded = config(environ=environ)
    assert (loaded.grpc_tls_cert, loaded.grpc_tls_key, loaded.grpc_client_ca) == (
        pki.server_cert,
        pki.server_key,
        pki.ca,
    )
    # An empty variable (a Helm value left blank) means not set.
    blank = config(environ=dict.fromkeys(environ, ""))
    assert (blank.grpc_tls_cert, blank.grpc_tls_key, blank.grpc_client_ca) == (None, None, None)


def test_without_tls_flags_there_is_no_tls() -> None:
    plain = config()
    assert (plain.grpc_tls_cert, plain.grpc_tls_key, plain.grpc_client_ca) == (None, None, None)


def bad_flags(pki: Pki, tmp: Path) -> list[tuple[list[str | Path], str, str]]:
    """(flags, the flag the error names, a phrase of the error)."""
    garbage = tmp / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cert, key = pki.server_cert, pki.server_key
    return [
        (["--grpc-tls-cert", cert], "--grpc-tls-cert", "needs --grpc-tls-key"),
        (["--grpc-tls-key", key], "--grpc-tls-key", "needs --grpc-tls-cert"),
        (["--grpc-client-ca", pki.ca], "--grpc-client-ca", "needs --grpc-tls-cert"),
        (
            ["--grpc-tls-cert", tmp / "missing.crt", "--grpc-tls-key", key],
            "--grpc-tls-cert",
            "cannot read",
        ),
        (
            ["--grpc-tls-cert", cert, "--grpc-tls-key", tmp / "missing.key"],
            "--grpc-tls-key",
            "cannot read",
        ),
        (["--grpc-tls-cert", garbage, "--grpc-tls-key", key], "--grpc-tls-cert", "no PEM"),
        (["--grpc-tls-cert", cert, "--grpc-tls-key", garbage], "--grpc-tls-key", "no PEM"),
        (["--grpc-tls-cert", key, "--grpc-tls-key", key], "--grpc-tls-cert", "no PEM"),
        (
            ["--grpc-tls-cert", cert, "--grpc-tls-key", pki.client_key],
            "--grpc-tls-key",
            "is not the key of --grpc-tls-cert",
        ),
        (
            ["--grpc-tls-cert", cert, "--grpc-tls-key", key, "--grpc-client-ca", garbage],
            "--grpc-client-ca",
            "no PEM",
        ),
        (
            ["--grpc-tls-cert", cert, "--grpc-tls-key", key, "--grpc-client-ca", tmp],
            "--grpc-client-ca",
            "cannot read",
        ),
    ]


def test_bad_tls_flags_are_errors_naming_the_flag(pki: Pki, tmp_path: Path) -> None:
    for flags, flag, phrase in bad_flags(pki, tmp_path):
        with pytest.raises(ConfigError) as caught:
            config(*flags)
        message = str(caught.value)
        assert message.startswith(flag), (flags, message)
        assert phrase in message, (flags, message)


def test_an_encrypted_key_is_refused_without_prompting(pki: Pki, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(pki.server_key),
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            str(encrypted),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(ConfigError, match=r"--grpc-tls-key: .* is encrypted"):
        config("--grpc-tls-cert", pki.server_cert, "--grpc-tls-key", encrypted)


async def test_the_command_fails_in_one_line_naming_the_flag(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaler",
        "--grpc-tls-cert",
        str(tmp_path / "missing.crt"),
        "--grpc-tls-key",
        str(tmp_path / "missing.key"),
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 2
    text = stderr.decode()
    assert "--grpc-tls-cert: cannot read" in text
    assert "Traceback" not in text
