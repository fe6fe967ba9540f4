"""The dashboard conventions of issue 7, checked on the committed JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from dashboards import names
from scaler.common.flags import parse_duration
from scaler.config import build_parser
from scaler.scaling import ScalingPolicy
from tests.dashboards.expressions import (
    DASHBOARD_FILES,
    Exported,
    dashboard_expressions,
    load_dashboard,
    panels,
    selectors,
    variables,
)

DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
# Renaming a uid breaks every link and bookmark to the dashboard.
UIDS: Final = {
    "turn-fleet.json": "turnscale-turn-fleet",
    "turnscale-scaler.json": "turnscale-scaler",
}
TITLES: Final = {"turn-fleet.json": "TURN fleet", "turnscale-scaler.json": "turnscale scaler"}
# Grafana unit ids the dashboards use (a typo renders as a plain number).
UNITS: Final = frozenset({"short", "Bps", "cps", "ops", "reqps", "s", "bytes", "percentunit"})

dashboard_files = pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)


@dashboard_files
def test_read_only_utc_with_a_stable_uid(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["uid"] == UIDS[path.name]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"] == TITLES[path.name]
    assert dashboard["description"]
    assert dashboard["editable"] is False
    assert dashboard["timezone"] == "utc"
    assert dashboard["id"] is None
    assert "turnscale" in dashboard["tags"]


@dashboard_files
def test_datasource_then_namespace_gateway_and_pod_variables(path: Path) -> None:
    found = variables(load_dashboard(path))
    assert [v["name"] for v in found] == ["datasource", "namespace", "gateway", "pod"]
    source, *queried = found
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    for variable in queried:
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["query"].startswith("label_values(")
        assert variable["definition"] == variable["query"]
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["label"]
        assert variable["description"]


@dashboard_files
def test_every_panel_and_query_uses_the_datasource_variable(path: Path) -> None:
    for panel in panels(load_dashboard(path)):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


@dashboard_files
def test_every_panel_has_a_unique_title_a_description_and_a_unit(path: Path) -> None:
    titles = []
    for panel in panels(load_dashboard(path)):
        titles.append(panel["title"])
        assert panel["description"].endswith("."), panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, panel["title"]
        for target in panel["targets"]:
            assert target["legendFormat"], (panel["title"], target["refId"])
    assert len(titles) == len(set(titles)), titles


@dashboard_files
def test_panel_ids_and_grid_positions(path: Path) -> None:
    dashboard = load_dashboard(path)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered


@dashboard_files
def test_every_range_is_the_rate_interval(path: Path) -> None:
    for expression in dashboard_expressions(path):
        assert "irate(" not in expression.text, expression.origin
        for selector in selectors(expression.text):
            if selector.range is not None:
                assert selector.range == "$__rate_interval", (expression.origin, selector)
                assert selector.function in ("rate", "increase"), (expression.origin, selector)
    text = path.read_text(encoding="utf-8")
    assert text.count("rate(") == text.count("[$__rate_interval]")


def _matchers(text: str) -> set[str]:
    return {part.strip().replace(" ", "") for part in text.split(",") if part.strip()}


def _required_filters(dashboard: str, name: str, exported: Exported) -> set[str]:
    """The variable filters a selector of ``name`` must carry in ``dashboard``."""
    namespace, gateway, pod = (
        'namespace=~"$namespace"',
        'gateway=~"$gateway"',
        'pod=~"$pod"',
    )
    if name.startswith("keda_"):
        # KEDA's own series: its namespace label is KEDA's; the metric names the trigger.
        return {f'metric=~"{names.KEDA_METRIC_REGEX}"'}
    if name.startswith("kube_"):
        return {namespace, 'deployment=~"$gateway"'}
    if dashboard == "turnscale-scaler.json":
        if name.startswith("stunner_"):
            return {gateway, pod}
        return {namespace, pod}
    # The fleet dashboard: per-relay series also by pod, per-gateway ones without.
    if "pod" in exported.labels.get(name, set()):
        return {namespace, gateway, pod}
    return {namespace, gateway}


def _panel_selectors(path: Path) -> Iterator[tuple[str, Any]]:
    for expression in dashboard_expressions(path):
        if expression.kind == "panel":
            for selector in selectors(expression.text):
                yield expression.origin, selector


@dashboard_files
def test_every_panel_query_is_filtered_by_the_variables(
    path: Path, exported_metrics: Exported
) -> None:
    for origin, selector in _panel_selectors(path):
        required = _required_filters(path.name, selector.name, exported_metrics)
        missing = required - _matchers(selector.matchers)
        assert not missing, f"{origin}: {selector.name} lacks {missing}"


@dashboard_files
def test_every_variable_is_used_by_a_panel(path: Path) -> None:
    texts = [e.text for e in dashboard_expressions(path) if e.kind == "panel"]
    for variable in ("namespace", "gateway", "pod"):
        assert any(f"${variable}" in text for text in texts), variable


def test_the_bounds_are_the_scalers_defaults() -> None:
    """Dashboards and alerts use the scaler's own defaults, not copies that could drift."""
    policy = names.POLICY
    assert policy == ScalingPolicy()
    assert (policy.min_replicas, policy.max_replicas, policy.target_per_replica) == (2, 10, 100)
    default = build_parser().get_default("stale_after")
    assert parse_duration(default) == names.STALE_AFTER_SECONDS
