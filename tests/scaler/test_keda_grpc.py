"""KEDA's external scaler through the generated stubs, against a running scaler fed by
real ``POST /v1/reports``: spec, values, activation, push streams, health, metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from tests.scaler.helpers import value
from tests.scaler.keda_helpers import (
    GATEWAY,
    NAMESPACE,
    TIMEOUT,
    Keda,
    read,
    ref,
    running_scaler,
)
from tests.waiting import eventually

SERVICE = "externalscaler.ExternalScaler"
METRIC = "stunner-allocations-stunner-gateway"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def keda() -> AsyncIterator[Keda]:
    async with running_scaler() as harness:
        yield harness


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call, TIMEOUT)
    return caught.value


def requests(text: str, method: str, code: str) -> float | None:
    return value(text, "turnscale_grpc_requests_total", method=f"{SERVICE}/{method}", code=code)


async def counted(keda: Keda, method: str, code: str, times: int = 1) -> None:
    """Wait for the server to count a failed call: abort() answers before the handler ends."""
    stats = keda.server.grpc.stats
    key = (f"{SERVICE}/{method}" if "/" not in method else method, code)
    await eventually(lambda: stats.requests[key] >= times, f"{key} not counted")


# ---- GetMetricSpec / GetMetrics ------------------------------------------------------


async def test_metric_spec_is_exactly_one_lowercase_spec_at_the_target(keda: Keda) -> None:
    answer: pb.GetMetricSpecResponse = await keda.stub.GetMetricSpec(ref(gateway=GATEWAY))
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in answer.metricSpecs] == [
        (METRIC, 100, 100.0)  # --target-per-replica
    ]
    custom = await keda.stub.GetMetricSpec(ref(gateway=GATEWAY, targetPerReplica="40"))
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in custom.metricSpecs] == [
        (METRIC, 40, 40.0)
    ]
    # Even with no relay anywhere and no gateway given, never an empty list.
    whole = await keda.stub.GetMetricSpec(ref())
    assert [s.metricName for s in whole.metricSpecs] == ["stunner-allocations"]


async def test_metrics_count_the_selected_fleet_without_draining_relays(keda: Keda) -> None:
    await keda.report("relay-a", udp=40, tcp=2)
    await keda.report("relay-b", udp=10)
    await keda.report("relay-c", udp=7, draining=True)
    await keda.report("relay-x", udp=5, gateway="other-gateway")
    await keda.report("relay-y", udp=3, namespace="media")  # same gateway name elsewhere
    assert await keda.metric_value(ref(gateway=GATEWAY)) == 55
    assert await keda.metric_value(ref(gateway=GATEWAY, namespace=NAMESPACE)) == 52
    assert await keda.metric_value(ref(gateway="other-gateway")) == 5
    assert await keda.metric_value(ref(namespace="media")) == 3
    assert await keda.metric_value(ref()) == 60
    assert await keda.metric_value(ref(gateway="no-such-gateway")) == 0
    # The same figure as the metrics-api endpoint.
    status, body = await keda.get_json(f"/v1/scale?gateway={GATEWAY}&namespace={NAMESPACE}")
    assert (status, body["allocations"]) == (200, 52)
    # A relay that starts draining stops counting at once.
    await keda.report("relay-a", udp=40, tcp=2, draining=True)
    assert await keda.metric_value(ref(gateway=GATEWAY, namespace=NAMESPACE)) == 10


async def test_expired_relays_stop_counting(keda: Keda) -> None:
    await keda.report("relay-a", udp=40)
    await keda.report("relay-b", udp=10)
    keda.clock.now += 30
    await keda.report("relay-b", udp=12)
    keda.clock.now += 40  # relay-a silent for 70 s, past --expire-after 60s
    keda.server.sweeper.sweep()
    assert await keda.metric_value(ref(gateway=GATEWAY)) == 12


@pytest.mark.parametrize(
    "name",
    [
        METRIC,
        f"s0-{METRIC}",
        f"s12-{METRIC}",
        METRIC.upper(),
        "S3-Stunner-Allocations-Stunner-Gateway",
    ],
)
async def test_the_metric_is_found_with_or_without_prefix_in_any_case(
    keda: Keda, name: str
) -> None:
    await keda.report(udp=9)
    request = pb.GetMetricsRequest(scaledObjectRef=ref(gateway=GATEWAY), metricName=name)
    answer: pb.GetMetricsResponse = await keda.stub.GetMetrics(request)
    values = [(v.metricName, v.metricValue, v.metricValueFloat) for v in answer.metricValues]
    assert values == [(METRIC, 9, 9.0)]


@pytest.mark.parametrize(
    "name", ["stunner-allocations", "s0-other-metric", f"sx-{METRIC}", f"{METRIC}-2", ""]
)
async def test_another_metric_name_is_not_found(keda: Keda, name: str) -> None:
    request = pb.GetMetricsRequest(scaledObjectRef=ref(gateway=GATEWAY), metricName=name)
    error = await rpc_error(keda.stub.GetMetrics(request))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert METRIC in (error.details() or "")


# ---- bad metadata ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"targetPerReplica": "lots"}, "targetPerReplica"),
        ({"targetPerReplica": "0"}, "targetPerReplica"),
        ({"minReplicas": "-1"}, "minReplicas"),
        ({"maxReplicas": "ten"}, "maxReplicas"),
        ({"minReplicas": "5", "maxReplicas": "3"}, "maxReplicas"),
        ({"activationAllocations": "1.5"}, "activationAllocations"),
        ({"gateway": "Stunner_Gateway"}, "gateway"),
        ({"namespace": "not.a.label"}, "namespace"),
    ],
)
async def test_malformed_metadata_is_invalid_argument_naming_the_key(
    keda: Keda, metadata: dict[str, str], key: str
) -> None:
    trigger = ref(**{"gateway": GATEWAY, **metadata})
    calls = {
        "IsActive": keda.stub.IsActive(trigger),
        "GetMetricSpec": keda.stub.GetMetricSpec(trigger),
        "GetMetrics": keda.stub.GetMetrics(
            pb.GetMetricsRequest(scaledObjectRef=trigger, metricName=METRIC)
        ),
        "StreamIsActive": read(keda.stub.StreamIsActive(trigger)),
    }
    for method, call in calls.items():
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert f"scalerMetadata.{key}" in (error.details() or ""), method
        await counted(keda, method, "INVALID_ARGUMENT")
        assert requests(await keda.metrics(), method, "INVALID_ARGUMENT") == 1
    # Nothing changed: a good trigger still gets its answer.
    assert await keda.metric_value(ref(gateway=GATEWAY)) == 0


# ---- IsActive ------------------------------------------------------------------------


async def test_active_while_allocations_exceed_the_activation(keda: Keda) -> None:
    trigger = ref(gateway=GATEWAY)
    strict = ref(gateway=GATEWAY, activationAllocations="5")

    async def active() -> tuple[bool, bool]:
        plain: pb.IsActiveResponse = await keda.stub.IsActive(trigger)
        high: pb.IsActiveResponse = await keda.stub.IsActive(strict)
        return plain.result, high.result

    assert await active() == (False, False)
    await keda.report(udp=5)
    assert await active() == (True, False)
    await keda.report(udp=6)
    assert await active() == (True, True)
    await keda.report(udp=6, draining=True)
    assert await active() == (False, False)


# ---- StreamIsActive ------------------------------------------------------------------


async def test_stream_sends_the_state_then_one_message_per_change(keda: Keda) -> None:
    call = keda.stub.StreamIsActive(ref(gateway=GATEWAY, activationAllocations="2"))
    assert (await read(call)).result is False  # the state when the stream opens
    await keda.report(udp=1)  # still not above the activation: nothing sent
    await keda.report(udp=3)
    assert (await read(call)).result is True
    await keda.report(udp=50)  # still active: nothing sent
    await keda.report("relay-b", udp=4, gateway="other-gateway")  # another fleet
    await keda.report("relay-c", udp=9, draining=True)  # draining: not counted
    await keda.report(udp=2)
    # Had anything been repeated in between, this would read True.
    assert (await read(call)).result is False
    await keda.report(udp=0)
    await keda.report(udp=9)
    assert (await read(call)).result is True
    call.cancel()


async def test_a_stream_opened_on_an_active_fleet_starts_active(keda: Keda) -> None:
    await keda.report(udp=3)
    call = keda.stub.StreamIsActive(ref(gateway=GATEWAY))
    assert (await read(call)).result is True
    await keda.report(udp=3, draining=True)
    assert (await read(call)).result is False
    call.cancel()


async def test_many_streams_follow_changes_and_cancelled_ones_free_everything(
    keda: Keda,
) -> None:
    servicer = keda.server.grpc.servicer
    changes = keda.server.service.changes
    # One more channel, closed abruptly below, as a KEDA pod that goes away would.
    other = grpc.aio.insecure_channel(str(keda.server.grpc_address))
    other_stub: Any = pb_grpc.ExternalScalerStub(other)  # type: ignore[no-untyped-call]
    calls = [keda.stub.StreamIsActive(ref(gateway=GATEWAY)) for _ in range(100)]
    closed = [other_stub.StreamIsActive(ref()) for _ in range(20)]
    firsts = await asyncio.gather(*(read(call) for call in calls + closed))
    assert [first.result for first in firsts] == [False] * 120
    assert servicer.open_streams == 120

    await keda.report(udp=1)
    nexts = await asyncio.gather(*(read(call) for call in calls + closed))
    assert [message.result for message in nexts] == [True] * 120

    for call in calls:
        call.cancel()
    await other.close()
    await eventually(lambda: servicer.open_streams == 0, "streams still open")
    await eventually(lambda: len(changes) == 0, "change waiters still held")
    text = await keda.metrics()
    gauge = value(text, "turnscale_grpc_streams_active", method=f"{SERVICE}/StreamIsActive")
    assert gauge == 0
    assert requests(text, "StreamIsActive", "CANCELLED") == 120
    # The server goes on: a new stream works and reports still land.
    await keda.report(udp=0)
    call = keda.stub.StreamIsActive(ref(gateway=GATEWAY))
    assert (await read(call)).result is False
    call.cancel()


async def test_stream_metric_spec_is_unimplemented(keda: Keda) -> None:
    error = await rpc_error(read(keda.stub.StreamMetricSpec(ref())))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    await counted(keda, "StreamMetricSpec", "UNIMPLEMENTED")
    text = await keda.metrics()
    assert requests(text, "StreamMetricSpec", "UNIMPLEMENTED") == 1


# ---- health, readiness, shutdown -----------------------------------------------------


async def test_health_is_serving_for_the_server_and_the_external_scaler(keda: Keda) -> None:
    for service in ("", SERVICE):
        request = health_pb2.HealthCheckRequest(service=service)
        answer: health_pb2.HealthCheckResponse = await keda.health.Check(request)
        assert answer.status == SERVING, service
    error = await rpc_error(keda.health.Check(health_pb2.HealthCheckRequest(service="nope")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    status, body = await keda.get_json("/readyz")
    assert (status, body["checks"]) == (200, {"http": True, "grpc": True})


async def test_stop_turns_not_serving_and_ends_streams_cleanly() -> None:
    async with running_scaler() as keda:
        watch = keda.health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert (await read(watch)).status == SERVING
        stream = keda.stub.StreamIsActive(ref(gateway=GATEWAY))
        assert (await read(stream)).result is False

        stopping = asyncio.create_task(keda.server.stop())
        assert (await read(watch)).status == NOT_SERVING
        watch.cancel()
        # KEDA sees the end of the stream (io.EOF), not an error, and reconnects.
        assert await read(stream) is grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK
        await asyncio.wait_for(stopping, TIMEOUT)
        assert keda.server.readiness.checks() == {"http": False, "grpc": False}
        assert keda.server.grpc.servicer.open_streams == 0


async def test_the_grpc_port_is_taken_alone() -> None:
    async with running_scaler() as keda:
        taken = keda.server.grpc_address
        assert taken is not None
        with pytest.raises(OSError, match="cannot listen for gRPC"):
            async with running_scaler(grpc=taken):
                pass


# ---- metrics ---------------------------------------------------------------------------


async def test_grpc_calls_are_counted_and_timed_on_metrics(keda: Keda) -> None:
    for _ in range(3):
        await keda.stub.GetMetricSpec(ref(gateway=GATEWAY))
    await keda.stub.IsActive(ref())
    await rpc_error(keda.stub.IsActive(ref(targetPerReplica="x")))
    await keda.health.Check(health_pb2.HealthCheckRequest())
    nope = keda.channel.unary_unary("/externalscaler.ExternalScaler/Nope")
    assert (await rpc_error(nope(b""))).code() == grpc.StatusCode.UNIMPLEMENTED
    await counted(keda, "IsActive", "INVALID_ARGUMENT")

    text = await keda.metrics()
    assert requests(text, "GetMetricSpec", "OK") == 3
    assert requests(text, "IsActive", "OK") == 1
    assert requests(text, "IsActive", "INVALID_ARGUMENT") == 1
    assert requests(text, "GetMetrics", "OK") == 0  # exported before the first call
    check = "grpc.health.v1.Health/Check"
    assert value(text, "turnscale_grpc_requests_total", method=check, code="OK") == 1
    assert value(text, "turnscale_grpc_requests_total", method="unknown", code="UNIMPLEMENTED") == 1
    count = "turnscale_grpc_request_duration_seconds_count"
    assert value(text, count, method=f"{SERVICE}/GetMetricSpec") == 3
    assert value(text, count, method=f"{SERVICE}/IsActive") == 2
    bucket = "turnscale_grpc_request_duration_seconds_bucket"
    assert value(text, bucket, method=f"{SERVICE}/IsActive", le="+Inf") == 2


async def test_an_anonymous_caller_cannot_rewrite_the_exported_desired_replicas(
    keda: Keda,
) -> None:
    await keda.report(udp=250)
    labels = {"namespace": NAMESPACE}

    async def desired() -> float | None:
        text = await keda.metrics()
        return value(text, "stunner_scaler_desired_replicas", gateway=GATEWAY, **labels)

    assert await desired() == 3  # the flags: 250 / 100, within 2..10
    # Without mutual TLS anyone who reaches the port could be calling: its bounds answer
    # its own call (the spec's target is its targetPerReplica) but change no export.
    hostile = ref(gateway=GATEWAY, minReplicas="0", maxReplicas="1", targetPerReplica="50")
    assert (await keda.stub.IsActive(hostile)).result is True
    spec = await keda.stub.GetMetricSpec(hostile)
    assert spec.metricSpecs[0].targetSize == 50
    assert await desired() == 3
    assert len(keda.server.policies) == 0


# ---- uvloop and the real command ------------------------------------------------------


def test_grpc_aio_serves_on_uvloop() -> None:
    """Production runs the scaler on uvloop: grpc.aio must serve and push on it."""

    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with running_scaler() as keda:
            call = keda.stub.StreamIsActive(ref(gateway=GATEWAY))
            assert (await read(call)).result is False
            await keda.report(udp=5)
            assert (await read(call)).result is True
            assert await keda.metric_value(ref(gateway=GATEWAY)) == 5
            call.cancel()
            await eventually(lambda: keda.server.grpc.servicer.open_streams == 0, "stream open")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_the_scaler_command_serves_grpc_health_and_stops_on_sigterm() -> None:
    env = {**os.environ, "TURNSCALE_GRPC": "127.0.0.1:0", "TURNSCALE_HTTP": "127.0.0.1:0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaler",
        env=env,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        grpc_address = None
        while grpc_address is None:
            line = await asyncio.wait_for(process.stderr.readline(), TIMEOUT)
            assert line, "the scaler exited before serving"
            record = json.loads(line)
            if record.get("event") == "scaler serving":
                grpc_address = record["grpc"]
        async with grpc.aio.insecure_channel(grpc_address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
            assert answer.status == SERVING
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
