"""Bandwidth-aware scaling through the real contracts: KEDA's gRPC stubs on a running
scaler fed by real ``POST /v1/reports``, ``/v1/scale`` and ``/metrics``.

The HPA gets one metric per proposal and takes the larger: for each spec it computes
ceil(value / targetSize) and clamps the largest to its bounds. :func:`hpa_replicas` does
that arithmetic from the gRPC answers alone, and the scaler's own ``desiredReplicas``
must agree with it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc
import pytest

from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.scaling import ScalingPolicy
from scaler.wire import Report, encode
from tests.reports import T0
from tests.scaler.helpers import scaler_config, traffic_report, value
from tests.scaler.keda_helpers import GATEWAY, JSON, NAMESPACE, Keda, ref, running_scaler
from tests.scaler.test_keda_grpc import rpc_error

ALLOCATIONS = "stunner-allocations-stunner-gateway"
BANDWIDTH = "stunner-bandwidth-stunner-gateway"
MBIT = 125_000  # bytes per second
FLEET = {"namespace": NAMESPACE, "gateway": GATEWAY}


@pytest.fixture
async def keda() -> AsyncIterator[Keda]:
    """A scaler with --target-bandwidth-per-replica 200Mbit (25,000,000 bytes/s)."""
    policy = ScalingPolicy(target_bandwidth_per_replica=200 * MBIT)
    async with running_scaler(scaler_config(), policy=policy) as harness:
        yield harness


async def post(keda: Keda, *reports: Report) -> None:
    for item in reports:
        url = f"{keda.base}/v1/reports"
        async with keda.session.post(url, data=encode(item), headers=JSON) as answer:
            assert answer.status in (200, 202), await answer.text()


async def carry(
    keda: Keda, pod: str, udp: int, bytes_per_second: int, *, draining: bool = False
) -> None:
    """Two reports of ``pod`` 5 s apart (relay clock) with that much traffic between them."""
    start = T0 + 1000
    await post(
        keda,
        traffic_report(1, start, 0, pod=pod, udp=udp, draining=draining),
        traffic_report(2, start + 5, 5 * bytes_per_second, pod=pod, udp=udp, draining=draining),
    )


async def values(keda: Keda, trigger: pb.ScaledObjectRef) -> dict[str, tuple[int, int]]:
    """``{metric name: (value, targetSize)}``, each value asked for by its own name as KEDA
    does (with its ``s0-`` prefix); every answer is exactly one value."""
    spec: pb.GetMetricSpecResponse = await keda.stub.GetMetricSpec(trigger)
    out = {}
    for item in spec.metricSpecs:
        request = pb.GetMetricsRequest(scaledObjectRef=trigger, metricName=f"s0-{item.metricName}")
        answer: pb.GetMetricsResponse = await keda.stub.GetMetrics(request)
        (metric,) = answer.metricValues
        assert metric.metricName == item.metricName
        assert metric.metricValueFloat == float(metric.metricValue)
        assert item.targetSizeFloat == float(item.targetSize)
        out[item.metricName] = (metric.metricValue, item.targetSize)
    return out


def hpa_replicas(answers: dict[str, tuple[int, int]], low: int = 2, high: int = 10) -> int:
    wanted = max(math.ceil(number / target) for number, target in answers.values())
    return min(max(wanted, low), high)


async def test_bandwidth_adds_a_second_metric_and_the_larger_proposal_wins(keda: Keda) -> None:
    trigger = ref(gateway=GATEWAY)
    # 5 allocations: 1 replica's worth; 120 Mbit/s + 400 Mbit/s = 2.6 replicas of 200 Mbit/s.
    await carry(keda, "relay-a", udp=3, bytes_per_second=120 * MBIT)
    await carry(keda, "relay-b", udp=2, bytes_per_second=400 * MBIT)
    answers = await values(keda, trigger)
    assert answers == {ALLOCATIONS: (5, 100), BANDWIDTH: (520 * MBIT, 200 * MBIT)}
    assert hpa_replicas(answers) == 3
    status, scale = await keda.get_json(f"/v1/scale?gateway={GATEWAY}")
    assert status == 200
    assert scale == {
        "gateway": GATEWAY,
        "namespace": None,
        "allocations": 5,
        "desiredReplicas": 3,
        "minReplicas": 2,
        "maxReplicas": 10,
        "targetPerReplica": 100,
        "relays": 2,
        "active": True,
        "bandwidth": 520 * MBIT,
        "targetBandwidthPerReplica": 200 * MBIT,
        "proposals": {"allocations": 1, "bandwidth": 3},
        "decidedBy": "bandwidth",
    }
    text = await keda.metrics()
    assert value(text, "stunner_scaler_bandwidth_bytes_per_second", **FLEET) == 520 * MBIT
    assert value(text, "stunner_scaler_target_bandwidth_per_replica", **FLEET) == 200 * MBIT
    assert value(text, "stunner_scaler_desired_replicas", **FLEET) == 3
    assert value(text, "stunner_scaler_deciding", metric="bandwidth", **FLEET) == 1
    assert value(text, "stunner_scaler_deciding", metric="allocations", **FLEET) == 0
    per_relay = "stunner_relay_bandwidth_bytes_per_second"
    assert value(text, per_relay, pod="relay-b", **FLEET) == 400 * MBIT


async def test_allocations_decide_when_they_propose_more(keda: Keda) -> None:
    await carry(keda, "relay-a", udp=450, bytes_per_second=10 * MBIT)
    answers = await values(keda, ref(gateway=GATEWAY))
    assert hpa_replicas(answers) == 5
    _, scale = await keda.get_json(f"/v1/scale?gateway={GATEWAY}")
    assert (scale["desiredReplicas"], scale["decidedBy"]) == (5, "allocations")
    assert scale["proposals"] == {"allocations": 5, "bandwidth": 1}


async def test_the_bounds_apply_to_the_bandwidth_proposal(keda: Keda) -> None:
    await carry(keda, "relay-a", udp=1, bytes_per_second=10_000 * MBIT)  # 50 replicas' worth
    _, scale = await keda.get_json(f"/v1/scale?gateway={GATEWAY}")
    assert (scale["proposals"]["bandwidth"], scale["desiredReplicas"]) == (50, 10)
    assert hpa_replicas(await values(keda, ref(gateway=GATEWAY))) == 10
    # A trigger's own bounds and target answer its own calls.
    small = ref(gateway=GATEWAY, maxReplicas="4", targetBandwidthPerReplica="5Gbit")
    answers = await values(keda, small)
    assert answers[BANDWIDTH] == (10_000 * MBIT, 5_000 * MBIT)
    assert hpa_replicas(answers, high=4) == 2


async def test_draining_relays_carry_no_bandwidth_for_scaling(keda: Keda) -> None:
    await carry(keda, "relay-a", udp=1, bytes_per_second=300 * MBIT)
    await carry(keda, "relay-b", udp=1, bytes_per_second=900 * MBIT, draining=True)
    answers = await values(keda, ref(gateway=GATEWAY))
    assert answers[BANDWIDTH] == (300 * MBIT, 200 * MBIT)
    text = await keda.metrics()
    # Exported per relay all the same: the draining relay still moves its calls' bytes.
    per_relay = "stunner_relay_bandwidth_bytes_per_second"
    assert value(text, per_relay, pod="relay-b", **FLEET) == 900 * MBIT


@pytest.mark.parametrize(
    "name",
    [BANDWIDTH, f"s1-{BANDWIDTH}", BANDWIDTH.upper(), "S7-Stunner-Bandwidth-Stunner-Gateway"],
)
async def test_the_bandwidth_metric_is_found_with_or_without_prefix_in_any_case(
    keda: Keda, name: str
) -> None:
    await carry(keda, "relay-a", udp=1, bytes_per_second=7 * MBIT)
    request = pb.GetMetricsRequest(scaledObjectRef=ref(gateway=GATEWAY), metricName=name)
    answer: pb.GetMetricsResponse = await keda.stub.GetMetrics(request)
    assert [(v.metricName, v.metricValue) for v in answer.metricValues] == [(BANDWIDTH, 7 * MBIT)]


async def test_without_a_target_there_is_no_bandwidth_metric() -> None:
    async with running_scaler() as keda:  # the flag off, as by default
        await carry(keda, "relay-a", udp=3, bytes_per_second=900 * MBIT)
        spec: pb.GetMetricSpecResponse = await keda.stub.GetMetricSpec(ref(gateway=GATEWAY))
        assert [s.metricName for s in spec.metricSpecs] == [ALLOCATIONS]
        request = pb.GetMetricsRequest(scaledObjectRef=ref(gateway=GATEWAY), metricName=BANDWIDTH)
        error = await rpc_error(keda.stub.GetMetrics(request))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        # /v1/scale is what it always was; /metrics measures, but nothing decides on it.
        _, scale = await keda.get_json(f"/v1/scale?gateway={GATEWAY}")
        assert set(scale) == {
            "gateway",
            "namespace",
            "allocations",
            "desiredReplicas",
            "minReplicas",
            "maxReplicas",
            "targetPerReplica",
            "relays",
            "active",
        }
        text = await keda.metrics()
        assert value(text, "stunner_scaler_bandwidth_bytes_per_second", **FLEET) == 900 * MBIT
        assert value(text, "stunner_scaler_target_bandwidth_per_replica", **FLEET) is None
        assert value(text, "stunner_scaler_deciding", metric="allocations", **FLEET) is None
        # A trigger turns it on for itself.
        answers = await values(keda, ref(gateway=GATEWAY, targetBandwidthPerReplica="1Gbit"))
        assert answers == {ALLOCATIONS: (3, 100), BANDWIDTH: (900 * MBIT, 1000 * MBIT)}


@pytest.mark.parametrize("bad", ["lots", "200", "200Mb", "0Mbit", "-5MB", "81Tbit", ""])
async def test_a_malformed_bandwidth_target_is_invalid_argument_naming_the_key(
    keda: Keda, bad: str
) -> None:
    trigger = ref(gateway=GATEWAY, targetBandwidthPerReplica=bad)
    for call in (
        keda.stub.GetMetricSpec(trigger),
        keda.stub.IsActive(trigger),
        keda.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=trigger, metricName=BANDWIDTH)),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "scalerMetadata.targetBandwidthPerReplica" in (error.details() or "")


async def test_absurd_counters_over_an_instant_still_get_an_answer(keda: Keda) -> None:
    """A relay (or a token holder) claims 2**53 bytes within the smallest step of its clock:
    the figure is capped, every answer still comes, and it asks for at most the maximum."""
    start = T0 + 1000
    await post(
        keda,
        traffic_report(1, start, 0, udp=1),
        traffic_report(2, math.nextafter(start, math.inf), 1 << 53, udp=1),
    )
    answers = await values(keda, ref(gateway=GATEWAY))
    assert answers[BANDWIDTH] == (1 << 53, 200 * MBIT)
    assert hpa_replicas(answers) == 10
    _, scale = await keda.get_json(f"/v1/scale?gateway={GATEWAY}")
    assert (scale["bandwidth"], scale["desiredReplicas"]) == (1 << 53, 10)
    text = await keda.metrics()
    assert value(text, "stunner_scaler_desired_replicas", **FLEET) == 10
