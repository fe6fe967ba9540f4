"""Running the real scaler app in tests and reading its metrics back."""

from __future__ import annotations

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from scaler import wire
from scaler.common.flags import HostPort
from scaler.config import ScalerConfig
from scaler.scaling import ScalingPolicy
from tests.reports import T0, report


def scaler_config(
    *, token: str | None = None, max_relays: int = 1000, http_port: int = 0, grpc_port: int = 0
) -> ScalerConfig:
    return ScalerConfig(
        http=HostPort("127.0.0.1", http_port),
        grpc=HostPort("127.0.0.1", grpc_port),
        policy=ScalingPolicy(),
        stale_after=15.0,
        expire_after=60.0,
        token=token,
        max_relays=max_relays,
        log_level="info",
    )


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``{(sample name, labels): value}`` from a text exposition."""
    out = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(exposition: str, name: str, **labels: str) -> float | None:
    return samples(exposition).get((name, frozenset(labels.items())))


def traffic_report(
    seq: int,
    at: float,
    received: int,
    sent: int | None = None,
    *,
    pod: str = "relay-a",
    instance: str = "inst1",
    started_at: float = T0,
    udp: int = 0,
    gateway: str = "stunner-gateway",
    draining: bool = False,
) -> wire.Report:
    """A report whose byte counters read ``received``/``sent`` (default: as many as
    received) at ``at`` on the relay's clock, split over both sides as a relay counts."""
    sent = received if sent is None else sent
    base = report(
        pod,
        seq=seq,
        instance=instance,
        started_at=started_at,
        gateway=gateway,
        udp=udp,
        received={"client": received // 2, "peer": received - received // 2},
        sent={"client": sent - sent // 3, "peer": sent // 3},
        draining=draining,
    )
    return msgspec.structs.replace(base, sent_at=at)
