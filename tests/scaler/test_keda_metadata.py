"""Trigger metadata, metric names, exported policies and gRPC counters: pure units."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.core import Metric

from scaler.keda.metadata import MetadataError, Trigger, parse_trigger
from scaler.keda.policies import PolicyBook
from scaler.keda.stats import GrpcStats, method_label
from scaler.scaling import ScalingPolicy

FLAGS = ScalingPolicy(min_replicas=2, max_replicas=10, target_per_replica=100)
KEDA_KEYS = {"scalerAddress": "turnscale.stunner.svc:9090", "enableTLS": "false"}


def test_defaults_come_from_the_flags_and_the_whole_fleet() -> None:
    trigger = parse_trigger(KEDA_KEYS, FLAGS)
    assert trigger == Trigger(gateway=None, namespace=None, policy=FLAGS, activation=0)
    assert trigger.metric_name == "stunner-allocations"


def test_every_key_is_read() -> None:
    trigger = parse_trigger(
        {
            **KEDA_KEYS,
            "gateway": "udp-gateway",
            "namespace": "stunner",
            "targetPerReplica": " 40 ",
            "minReplicas": "0",
            "maxReplicas": "7",
            "activationAllocations": "3",
            "somethingElse": "ignored",
        },
        FLAGS,
    )
    assert trigger == Trigger("udp-gateway", "stunner", ScalingPolicy(0, 7, 40), 3)
    assert trigger.metric_name == "stunner-allocations-stunner-udp-gateway"


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"targetPerReplica": "abc"}, "targetPerReplica"),
        ({"targetPerReplica": "0"}, "targetPerReplica"),
        ({"targetPerReplica": "-5"}, "targetPerReplica"),
        ({"targetPerReplica": "1.5"}, "targetPerReplica"),
        ({"targetPerReplica": "1e3"}, "targetPerReplica"),
        ({"targetPerReplica": ""}, "targetPerReplica"),
        ({"targetPerReplica": "\u0661\u0660\u0660"}, "targetPerReplica"),  # Arabic-Indic 100
        ({"targetPerReplica": "99999999999999999999"}, "targetPerReplica"),
        ({"minReplicas": "-1"}, "minReplicas"),
        ({"minReplicas": "two"}, "minReplicas"),
        ({"maxReplicas": "0"}, "maxReplicas"),
        ({"maxReplicas": "3", "minReplicas": "5"}, "maxReplicas"),
        ({"minReplicas": "11"}, "minReplicas"),  # above the --max-replicas default
        ({"maxReplicas": "1"}, "maxReplicas"),  # below the --min-replicas default
        ({"activationAllocations": "-1"}, "activationAllocations"),
        ({"activationAllocations": "many"}, "activationAllocations"),
        ({"gateway": "Stunner_Gateway"}, "gateway"),
        ({"gateway": ""}, "gateway"),
        ({"gateway": "a" * 254}, "gateway"),
        ({"namespace": "a.b"}, "namespace"),
        ({"namespace": " "}, "namespace"),
    ],
)
def test_a_malformed_value_names_its_key(metadata: dict[str, str], key: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_trigger({**KEDA_KEYS, **metadata}, FLAGS)
    assert caught.value.key == key
    assert f"scalerMetadata.{key}:" in str(caught.value)


def test_contradicting_bounds_say_where_each_came_from() -> None:
    with pytest.raises(MetadataError) as caught:
        parse_trigger({"minReplicas": "11"}, FLAGS)
    assert "minReplicas (11)" in str(caught.value)
    assert "maxReplicas (10, the --max-replicas default)" in str(caught.value)


def test_activation() -> None:
    trigger = parse_trigger({"activationAllocations": "5"}, FLAGS)
    assert [trigger.is_active(n) for n in (0, 5, 6)] == [False, False, True]
    assert [parse_trigger({}, FLAGS).is_active(n) for n in (0, 1)] == [False, True]


GATEWAY_NAMES = r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,2}"
gateways = st.from_regex(GATEWAY_NAMES, fullmatch=True)


@given(gateway=gateways, index=st.integers(0, 999), data=st.data())
def test_the_metric_is_named_with_or_without_trigger_index_in_any_case(
    gateway: str, index: int, data: st.DataObject
) -> None:
    trigger = parse_trigger({"gateway": gateway}, FLAGS)
    name = trigger.metric_name
    assert name == name.lower() == f"stunner-allocations-{gateway}"
    assert parse_trigger({"gateway": gateway, "targetPerReplica": "7"}, FLAGS).metric_name == name
    for candidate in (name, f"s{index}-{name}"):
        size = len(candidate)
        flips = data.draw(st.lists(st.booleans(), min_size=size, max_size=size))
        variant = "".join(c.upper() if up else c for c, up in zip(candidate, flips, strict=True))
        assert trigger.names_metric(variant)


@pytest.mark.parametrize(
    "requested",
    [
        "",
        "stunner-allocations",  # the whole fleet's metric, not this gateway's
        "stunner-allocations-other-gateway",
        "sx-stunner-allocations-stunner-gateway",
        "s-stunner-allocations-stunner-gateway",
        "s0-s1-stunner-allocations-stunner-gateway",
        "stunner-allocations-stunner-gateway-extra",
    ],
)
def test_other_metric_names_are_not_this_trigger(requested: str) -> None:
    assert not parse_trigger({"gateway": "stunner-gateway"}, FLAGS).names_metric(requested)


def test_policy_book_prefers_the_most_specific_recent_trigger() -> None:
    book = PolicyBook(FLAGS, ttl=600.0)
    whole = ScalingPolicy(1, 3, 100)
    gateway = ScalingPolicy(0, 5, 50)
    exact = ScalingPolicy(4, 8, 10)
    assert book.policy_for("stunner", "gw", now=0.0) == FLAGS
    book.record(Trigger(None, None, whole, 0), now=0.0)
    assert book.policy_for("stunner", "gw", now=1.0) == whole
    book.record(Trigger("gw", None, gateway, 0), now=0.0)
    assert book.policy_for("stunner", "gw", now=1.0) == gateway
    assert book.policy_for("stunner", "other", now=1.0) == whole
    book.record(Trigger("gw", "stunner", exact, 0), now=100.0)
    assert book.policy_for("stunner", "gw", now=101.0) == exact
    assert book.policy_for("media", "gw", now=101.0) == gateway
    # Triggers not heard from in the TTL are gone (deleted or edited ScaledObjects).
    assert book.policy_for("media", "gw", now=601.0) == FLAGS
    assert book.policy_for("stunner", "gw", now=700.0) == exact
    assert book.policy_for("stunner", "gw", now=701.0) == FLAGS


def test_policy_book_is_bounded() -> None:
    book = PolicyBook(FLAGS, limit=3)
    for n in range(10):
        book.record(Trigger(f"gw{n}", None, ScalingPolicy(0, n + 1, 1), 0), now=0.0)
    assert len(book) == 3
    assert book.policy_for("ns", "gw9", now=0.0) == ScalingPolicy(0, 10, 1)
    assert book.policy_for("ns", "gw0", now=0.0) == FLAGS


def samples(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def test_grpc_stats_render_counters_histogram_and_streams() -> None:
    stats = GrpcStats(unary=["svc/Unary"], streams=["svc/Stream"])
    before = samples(list(stats.collect()))
    assert before[("turnscale_grpc_requests_total", (("code", "OK"), ("method", "svc/Unary")))] == 0
    assert before[("turnscale_grpc_streams_active", (("method", "svc/Stream"),))] == 0
    stats.finished("svc/Unary", "OK", 0.0003)
    stats.finished("svc/Unary", "INVALID_ARGUMENT", 2.0)
    stats.stream_opened("svc/Stream")
    stats.stream_opened("svc/Stream")
    stats.stream_closed("svc/Stream")
    stats.finished("svc/Stream", "CANCELLED")
    after = samples(list(stats.collect()))
    unary = ("method", "svc/Unary")
    assert after[("turnscale_grpc_requests_total", (("code", "OK"), unary))] == 1
    assert after[("turnscale_grpc_requests_total", (("code", "INVALID_ARGUMENT"), unary))] == 1
    stream = ("method", "svc/Stream")
    assert after[("turnscale_grpc_requests_total", (("code", "CANCELLED"), stream))] == 1
    assert after[("turnscale_grpc_streams_active", (stream,))] == 1
    bucket = "turnscale_grpc_request_duration_seconds_bucket"
    assert after[(bucket, (("le", "0.00025"), unary))] == 0
    assert after[(bucket, (("le", "0.0005"), unary))] == 1
    assert after[(bucket, (("le", "1.0"), unary))] == 1
    assert after[(bucket, (("le", "+Inf"), unary))] == 2
    assert after[("turnscale_grpc_request_duration_seconds_count", (unary,))] == 2
    assert after[("turnscale_grpc_request_duration_seconds_sum", (unary,))] == pytest.approx(2.0003)
    # Streams have no latency: their lifetime is the caller's choice.
    assert ("turnscale_grpc_request_duration_seconds_count", (stream,)) not in after


def test_method_label() -> None:
    assert method_label("/externalscaler.ExternalScaler/GetMetrics") == (
        "externalscaler.ExternalScaler/GetMetrics"
    )
