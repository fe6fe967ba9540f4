"""Hostile input to the scaler: each one a clear, counted refusal, never a traceback.

Found by an attack round: a non-UTF-8 ``Authorization`` header and JSON nested 100k deep
were HTTP 500s with a traceback, non-UTF-8 gRPC strings were UNKNOWN, and none of them
was counted in ``turnscale_reports_total``.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from tests.scaler.helpers import scaler_config, value
from tests.scaler.keda_helpers import Keda, running_scaler

METHODS = ("IsActive", "GetMetricSpec", "GetMetrics", "StreamIsActive")


async def raw_post(keda: Keda, headers: bytes, body: bytes) -> bytes:
    """One HTTP/1.1 request written byte for byte (no client library cleans it up)."""
    address = keda.server.http_address
    assert address is not None
    reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        writer.write(
            b"POST /v1/reports HTTP/1.1\r\nHost: scaler\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\n"
            + headers
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]


async def test_a_non_utf8_token_is_a_counted_401(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_scaler(scaler_config(), token="secret") as keda:
        answer = await raw_post(keda, b"Authorization: Bearer \xff\xfe\r\n", b"{}")
        assert answer.startswith(b"HTTP/1.1 401 ")
        text = await keda.metrics()
        assert value(text, "turnscale_reports_total", result="unauthorized") == 1
    no_tracebacks(caplog)


async def test_json_nested_100k_deep_is_a_counted_400(caplog: pytest.LogCaptureFixture) -> None:
    nested = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    body = b'{"version":1,"events":[' + nested + b"]}"
    async with running_scaler() as keda:
        answer = await raw_post(keda, b"", body)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"nested too deeply" in answer
        text = await keda.metrics()
        assert value(text, "turnscale_reports_total", result="invalid") == 1
    no_tracebacks(caplog)


async def test_non_utf8_grpc_strings_are_invalid_argument(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # ScaledObjectRef.name (field 1) = 0xff 0xfe; GetMetricsRequest wraps it in field 1.
    bad_ref = b"\x0a\x02\xff\xfe"
    async with running_scaler() as keda:
        address = str(keda.server.grpc_address)
        async with grpc.aio.insecure_channel(address) as channel:
            for method in METHODS:
                path = f"/externalscaler.ExternalScaler/{method}"
                body = b"\x0a\x04" + bad_ref if method == "GetMetrics" else bad_ref
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    if method == "StreamIsActive":
                        stream = channel.unary_stream(
                            path, request_serializer=bytes, response_deserializer=bytes
                        )
                        async for _ in stream(body, timeout=5):
                            pass
                    else:
                        unary = channel.unary_unary(
                            path, request_serializer=bytes, response_deserializer=bytes
                        )
                        await unary(body, timeout=5)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
                assert "UTF-8" in (caught.value.details() or ""), method
        text = await keda.metrics()
        for method in METHODS:
            counted = value(
                text,
                "turnscale_grpc_requests_total",
                method=f"externalscaler.ExternalScaler/{method}",
                code="INVALID_ARGUMENT",
            )
            assert counted == 1, method
    no_tracebacks(caplog)
