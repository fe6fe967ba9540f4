"""The fast encoder says exactly what prometheus-client's own encoders say."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from scaler.exposition import render
from scaler.server import ScalerServer
from tests.reports import created, deleted, report
from tests.scaler.helpers import FakeClock, scaler_config

OM_ACCEPT = "application/openmetrics-text; version=1.0.0"


def busy_scaler() -> ScalerServer:
    """A whole scaler (built, not started) whose fleet and gRPC statistics are not empty."""
    clock = FakeClock()
    scaler = ScalerServer(scaler_config(), clock)
    fleet = scaler.service.fleet
    fleet.apply(report("relay-a", udp=4, tcp=1, events=[created(), deleted()]), clock.now)
    fleet.apply(
        report("relay-b", gateway="gw.two", udp=2, connections={"udp": 3, "tls": 9}, draining=True),
        clock.now,
    )
    clock.now += 20.25
    fleet.apply(report("relay-c", namespace="ns-3", udp=1), clock.now)
    scaler.grpc.stats.finished("externalscaler.ExternalScaler/IsActive", "OK", 0.0003)
    return scaler


def as_set(families: object) -> set[tuple[str, str, frozenset[tuple[str, str]], float]]:
    """Every sample but the process's own (its CPU time moves between two renders)."""
    return {
        (family.name, sample.name, frozenset(sample.labels.items()), sample.value)
        for family in families  # type: ignore[attr-defined]
        for sample in family.samples
        if not family.name.startswith("process_")
    }


def test_text_format_matches_the_library_encoder() -> None:
    registry = busy_scaler().registry
    ours, content_type = render(registry, None)
    assert content_type.startswith("text/plain; version=0.0.4")
    theirs = generate_latest(registry)
    assert as_set(parse_text(ours.decode())) == as_set(parse_text(theirs.decode()))


def test_openmetrics_matches_the_library_encoder() -> None:
    registry = busy_scaler().registry
    ours, content_type = render(registry, OM_ACCEPT)
    assert content_type.startswith("application/openmetrics-text")
    theirs = openmetrics_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
    assert ours.endswith(b"# EOF\n")
    assert ours.count(b"# EOF") == 1
    parsed_ours = parse_om(ours.decode())  # type: ignore[no-untyped-call]
    parsed_theirs = parse_om(theirs.decode())  # type: ignore[no-untyped-call]
    assert as_set(parsed_ours) == as_set(parsed_theirs)


def test_empty_fleet_renders_valid_families() -> None:
    registry = ScalerServer(scaler_config(), FakeClock()).registry
    for accept in (None, OM_ACCEPT):
        body, _ = render(registry, accept)
        text = body.decode()
        families = parse_om(text) if accept else parse_text(text)  # type: ignore[no-untyped-call]
        names = {family.name for family in families}
        assert "turnscale_reports" in names
