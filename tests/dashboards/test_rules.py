"""The Prometheus rules: promtool's checks, its unit tests, and their coverage."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import pytest
import yaml  # type: ignore[import-untyped]

from tests.dashboards.expressions import RULE_FILES, RULE_TESTS, load_rules, metric_names
from tests.tools import require_tool

# The alerts issue 7 asks for, by the words it uses.
ASKED_FOR: Final = {
    "scaler down or not scraped": "TurnscaleScalerDown",
    "relay reports stale": "TurnscaleRelayReportsStale",
    "fleet at max replicas": "TurnscaleFleetAtMaxReplicas",
    "fleet near capacity": "TurnscaleFleetNearCapacity",
    "reports being rejected": "TurnscaleReportsRejected",
    "KEDA scaler errors": "TurnscaleKedaScalerErrors",
    "relay draining for too long": "TurnscaleRelayDrainingTooLong",
    "fleet at max replicas over its bandwidth target": "TurnscaleFleetOverBandwidth",
}
SEVERITIES: Final = frozenset({"critical", "warning", "info"})
# Operations a recorded name may end with, and what its expression must then do.
OPERATIONS: Final = {
    "sum": r"^sum by \(",
    "count": r"^count by \(",
    "max": r"^max by \(",
    "ratio": r"\n/\n",
    "rate5m": r"rate\([a-z_]+\[5m\]\)",
}


def _rules() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in load_rules(path)["groups"]:
            yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def records() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "record" in rule]


def unit_tests() -> list[dict[str, Any]]:
    return [test for path in RULE_TESTS for test in load_rules(path)["tests"]]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_promtool_check_rules_passes_with_every_lint() -> None:
    checked = promtool("check", "rules", "--lint=all", "--lint-fatal", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("SUCCESS") == len(RULE_FILES)
    assert checked.stderr == ""


def test_promtool_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 2
    tested = promtool("test", "rules", *map(str, RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_the_unit_tests_load_the_generated_rule_files() -> None:
    for path in RULE_TESTS:
        loaded = {(path.parent / name).resolve() for name in load_rules(path)["rule_files"]}
        assert loaded <= set(RULE_FILES), path


def test_the_alerts_the_issue_asks_for() -> None:
    assert sorted(rule["alert"] for rule in alerts()) == sorted(ASKED_FOR.values())


@pytest.mark.parametrize("alert", alerts(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_static_summary_and_templated_description(
    alert: dict[str, Any],
) -> None:
    assert re.fullmatch(r"Turnscale[A-Z][A-Za-z]+", alert["alert"])
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description"}
    assert annotations["summary"] and "{{" not in annotations["summary"]
    assert re.search(r"\{\{.*\$(labels|value).*\}\}", annotations["description"])


@pytest.mark.parametrize("alert", alerts(), ids=lambda rule: rule["alert"])
def test_unit_tests_cover_the_alert_firing_and_not_firing(alert: dict[str, Any]) -> None:
    cases = [
        case
        for test in unit_tests()
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert["alert"]
    ]
    firing = [case for case in cases if case.get("exp_alerts")]
    assert firing, f"no test where {alert['alert']} fires"
    assert any(not case.get("exp_alerts") for case in cases), f"{alert['alert']} never quiet"
    for case in firing:
        for expected in case["exp_alerts"]:
            assert expected["exp_labels"]["severity"] == alert["labels"]["severity"]
            assert set(expected["exp_annotations"]) == {"summary", "description"}


def test_unit_tests_cover_every_recording_rule() -> None:
    tested = {case["expr"] for test in unit_tests() for case in test.get("promql_expr_test", [])}
    assert {rule["record"] for rule in records()} <= tested


@pytest.mark.parametrize("rule", records(), ids=lambda rule: rule["record"])
def test_recorded_names_are_level_metric_operations(rule: dict[str, Any]) -> None:
    level, metric, operations = rule["record"].split(":")
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", level)
    assert re.fullmatch(r"(stunner|turnscale)_[a-z_]+", metric)
    assert operations in OPERATIONS, operations
    expr = rule["expr"]
    assert re.search(OPERATIONS[operations], expr), expr
    # The outermost aggregation keeps exactly the level's labels.
    if operations != "ratio":
        grouping = re.match(r"^\w+ by \(([^)]*)\)", expr)
        assert grouping is not None, expr
        assert grouping[1].split(", ") == level.split("_")
    # The metric part names what is aggregated (counters without _total).
    sources = {name.split(":")[1] if ":" in name else name for name in metric_names(expr)}
    assert any(metric.startswith(source.removesuffix("_total")) for source in sources)


def _mutated(directory: Path, alert: str, expr: str) -> None:
    """Copies of the rule files and their tests, with ``alert``'s expression replaced."""
    (directory / "tests").mkdir()
    for path in RULE_TESTS:
        shutil.copy(path, directory / "tests" / path.name)
    for path in RULE_FILES:
        document = load_rules(path)
        for group in document["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert:
                    rule["expr"] = expr
        (directory / path.name).write_text(yaml.safe_dump(document))


# An alert that never fires and one that always fires, whatever its input.
MUTANTS: Final = {"never": "vector(1) == 0", "always": "vector(1)"}


@pytest.mark.parametrize("mutant", MUTANTS)
@pytest.mark.parametrize("alert", [rule["alert"] for rule in alerts()])
def test_the_unit_tests_catch_a_broken_alert(alert: str, mutant: str, tmp_path: Path) -> None:
    """Each alert's tests fail when it never fires, and when it fires on anything."""
    _mutated(tmp_path, alert, MUTANTS[mutant])
    tests: Sequence[str] = [str(tmp_path / "tests" / path.name) for path in RULE_TESTS]
    tested = promtool("test", "rules", *tests)
    assert tested.returncode != 0, f"{alert} {mutant} firing went unnoticed"
    assert f"alertname: {alert}" in tested.stdout + tested.stderr
