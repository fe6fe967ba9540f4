"""The fast encoder says exactly what prometheus-client's own encoders say."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from scaler.exposition import render
from scaler.service import ScalerService
from tests.reports import created, deleted, report
from tests.scaler.helpers import FakeClock, scaler_config

OM_ACCEPT = "application/openmetrics-text; version=1.0.0"


def busy_service() -> ScalerService:
    clock = FakeClock()
    service = ScalerService(scaler_config(), clock)
    service.fleet.apply(report("relay-a", udp=4, tcp=1, events=[created(), deleted()]), clock.now)
    service.fleet.apply(
        report("relay-b", gateway="gw.two", udp=2, connections={"udp": 3, "tls": 9}, draining=True),
        clock.now,
    )
    clock.now += 20.25
    service.fleet.apply(report("relay-c", namespace="ns-3", udp=1), clock.now)
    return service


def as_set(families: object) -> set[tuple[str, str, frozenset[tuple[str, str]], float]]:
    """Every sample but the process's own (its CPU time moves between two renders)."""
    return {
        (family.name, sample.name, frozenset(sample.labels.items()), sample.value)
        for family in families  # type: ignore[attr-defined]
        for sample in family.samples
        if not family.name.startswith("process_")
    }


def test_text_format_matches_the_library_encoder() -> None:
    service = busy_service()
    ours, content_type = render(service.registry, None)
    assert content_type.startswith("text/plain; version=0.0.4")
    theirs = generate_latest(service.registry)
    assert as_set(parse_text(ours.decode())) == as_set(parse_text(theirs.decode()))


def test_openmetrics_matches_the_library_encoder() -> None:
    service = busy_service()
    ours, content_type = render(service.registry, OM_ACCEPT)
    assert content_type.startswith("application/openmetrics-text")
    theirs = openmetrics_exposition.generate_latest(service.registry)  # type: ignore[no-untyped-call]
    assert ours.endswith(b"# EOF\n")
    assert ours.count(b"# EOF") == 1
    parsed_ours = parse_om(ours.decode())  # type: ignore[no-untyped-call]
    parsed_theirs = parse_om(theirs.decode())  # type: ignore[no-untyped-call]
    assert as_set(parsed_ours) == as_set(parsed_theirs)


def test_empty_fleet_renders_valid_families() -> None:
    service = ScalerService(scaler_config(), FakeClock())
    for accept in (None, OM_ACCEPT):
        body, _ = render(service.registry, accept)
        text = body.decode()
        families = parse_om(text) if accept else parse_text(text)  # type: ignore[no-untyped-call]
        names = {family.name for family in families}
        assert "turnscale_reports" in names
