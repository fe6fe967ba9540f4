"""Running the real scaler app in tests and reading its metrics back."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from scaler.common.flags import HostPort
from scaler.config import ScalerConfig
from scaler.scaling import ScalingPolicy


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
