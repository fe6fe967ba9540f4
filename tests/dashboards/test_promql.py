"""Every PromQL expression parses, and every metric it names exists.

Parsing is the real Prometheus parser's job: each expression (Grafana variables
substituted) becomes a recording rule in a scratch file that ``promtool check
rules`` reads. The exported names come from a running scaler's /metrics.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import pytest
import yaml  # type: ignore[import-untyped]

from tests.dashboards.expressions import (
    EXTERNAL,
    Exported,
    Expression,
    all_expressions,
    metric_names,
    recorded_names,
    selectors,
    substitute,
)
from tests.tools import require_tool

# Values for Grafana's variables when only parsing matters.
PARSE_VALUES: Final = {
    "__rate_interval": "1m",
    "namespace": "stunner",
    "gateway": "stunner-gateway",
    "pod": "relay-a",
}
# Exported families no dashboard panel or rule shows, and why.
NOT_CHARTED: Final[Mapping[str, str]] = {
    "process_max_fds": "standard process metric; the scaler panel shows CPU and memory",
    "process_open_fds": "standard process metric; the scaler panel shows CPU and memory",
    "process_start_time_seconds": "standard process metric (restarts show in CPU and memory)",
    "process_virtual_memory_bytes": "resident memory is what the panel shows",
}


def promtool_parse(expressions: Sequence[str], directory: Path) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on a scratch file holding each expression as a rule."""
    rules = [
        {"record": f"parse:expression_{index}:check", "expr": text}
        for index, text in enumerate(expressions)
    ]
    scratch = directory / "expressions.yaml"
    scratch.write_text(yaml.safe_dump({"groups": [{"name": "parse", "rules": rules}]}))
    return subprocess.run(
        [require_tool("promtool"), "check", "rules", "--lint=none", str(scratch)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_expression_parses(tmp_path: Path) -> None:
    expressions = all_expressions()
    assert len(expressions) > 50
    substituted = [substitute(e.text, PARSE_VALUES) for e in expressions]
    for expression, text in zip(expressions, substituted, strict=True):
        assert "$" not in text, f"{expression.origin}: unsubstituted variable in {text!r}"
    checked = promtool_parse(substituted, tmp_path)
    failed = [
        expression.origin
        for index, expression in enumerate(expressions)
        if f"parse:expression_{index}:check" in checked.stderr + checked.stdout
    ]
    assert checked.returncode == 0, (failed, checked.stderr)
    assert f"SUCCESS: {len(expressions)} rules found" in checked.stdout


def test_the_parse_check_catches_a_broken_expression(tmp_path: Path) -> None:
    checked = promtool_parse(["sum(rate(stunner_connections_total[1m])", "up"], tmp_path)
    assert checked.returncode != 0
    assert "parse:expression_0:check" in checked.stderr


def _names_of(expressions: Sequence[Expression]) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for expression in expressions:
        for name in metric_names(expression.text):
            used.setdefault(name, []).append(expression.origin)
    return used


def test_every_metric_named_is_exported_recorded_or_known_external(
    exported_metrics: Exported,
) -> None:
    known = set(exported_metrics.names) | recorded_names() | set(EXTERNAL)
    used = _names_of(all_expressions())
    unknown = {name: origins for name, origins in used.items() if name not in known}
    assert not unknown, f"metrics nobody exports: {unknown}"
    # Every external name listed is really used (the list does not rot).
    assert set(EXTERNAL) <= set(used), set(EXTERNAL) - set(used)


def test_external_metrics_are_of_the_kinds_the_issue_allows(exported_metrics: Exported) -> None:
    allowed = re.compile(r"up|kube_\w+|keda_\w+|process_\w+")
    for name in EXTERNAL:
        assert allowed.fullmatch(name), name
        assert name not in exported_metrics.names, f"{name} is the scaler's own"


def test_every_recorded_series_is_used_by_a_dashboard_or_an_alert() -> None:
    users = [e for e in all_expressions() if e.kind != "rule" or "Turnscale" in e.origin]
    used = set(_names_of(users))
    assert recorded_names() <= used, recorded_names() - used


def test_every_exported_family_is_charted_or_alerted_on(exported_metrics: Exported) -> None:
    used = set(_names_of(all_expressions()))
    shown = {exported_metrics.names[name] for name in used if name in exported_metrics.names}
    missing = set(exported_metrics.families) - shown - set(NOT_CHARTED)
    assert not missing, f"exported families no panel or rule uses: {sorted(missing)}"


def test_counters_are_read_only_through_rate_or_increase() -> None:
    for expression in all_expressions():
        for selector in selectors(expression.text):
            if selector.name.endswith(("_total", "_bucket", "_sum", "_count")):
                assert selector.function in ("rate", "increase"), (expression.origin, selector)
                assert selector.range is not None, (expression.origin, selector)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('sum by (le) (rate(a_bucket{x="}", y=~"b|c"}[5m]))', {"a_bucket"}),
        ("a / on (namespace) group_left (pod) b offset 5m", {"a", "b"}),
        ("sum(rate(c_total[1m])) by (side) or vector(1) * 1e3", {"c_total"}),
        ('absent(up{job="x"}) unless count without (i) (d:e:f)', {"up", "d:e:f"}),
        ('label_replace(g, "dst", "$1", "src", "(.*)") and bool h[5m:1m]', {"g", "h"}),
        ("histogram_quantile(0.99, sum by (method, le) (rate(k[$__rate_interval])))", {"k"}),
    ],
)
def test_the_lexer_finds_exactly_the_metric_names(text: str, expected: set[str]) -> None:
    assert metric_names(text) == expected


def test_the_lexer_reports_what_surrounds_a_selector() -> None:
    (selector,) = selectors('sum(rate(x_total{a="1", b=~"$b"}[$__rate_interval]))')
    assert selector.name == "x_total"
    assert selector.matchers == 'a="1", b=~"$b"'
    assert selector.range == "$__rate_interval"
    assert selector.function == "rate"
    (bare,) = selectors("max(y)")
    assert (bare.matchers, bare.range, bare.function) == ("", None, "max")
