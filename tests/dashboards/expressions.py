"""The PromQL in the committed dashboards and rules, and what the tests need to check it.

Parsing is left to the real Prometheus (``promtool check rules`` here, the HTTP API in
the end-to-end test). :func:`selectors` is only a lexer: it finds the metric names an
expression selects (and their label matchers) by skipping strings, label lists,
function and aggregation names, keywords, numbers and durations.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

ROOT: Final = Path(__file__).resolve().parents[2]
DASHBOARDS: Final = ROOT / "dashboards"
DASHBOARD_FILES: Final = (DASHBOARDS / "turn-fleet.json", DASHBOARDS / "turnscale-scaler.json")
RULES: Final = DASHBOARDS / "rules"
RULE_FILES: Final = (RULES / "turnscale-recording.yaml", RULES / "turnscale-alerts.yaml")
RULE_TESTS: Final = tuple(sorted((RULES / "tests").glob("*.test.yaml")))

# Series the dashboards and rules may use that the scaler does not export, and who does.
EXTERNAL: Final[Mapping[str, str]] = {
    "up": "Prometheus, per scrape target",
    "kube_deployment_status_replicas": "kube-state-metrics",
    "keda_scaler_metrics_value": "KEDA operator",
    "keda_scaler_detail_errors_total": "KEDA operator",
    "keda_scaler_metrics_latency_seconds": "KEDA operator",
}
# Suffixes of cumulative series: only ever read through rate() or increase().
COUNTER_SUFFIXES: Final = ("_total", "_bucket", "_sum", "_count")

VARIABLE: Final = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES: Final = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")


@dataclass(frozen=True, slots=True)
class Expression:
    origin: str
    text: str
    kind: Literal["panel", "variable", "rule"]
    dashboard: str | None = None


def load_dashboard(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def load_rules(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row (rows are laid out flat, not collapsed)."""
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dashboard["templating"]["list"]
    return found


def variable_query(variable: Mapping[str, Any]) -> tuple[str, str]:
    """``(selector, label)`` of a ``label_values(selector, label)`` variable."""
    match = LABEL_VALUES.fullmatch(variable["query"])
    assert match is not None, f"variable {variable['name']}: not label_values(): {variable}"
    return match["selector"].strip(), match["label"]


def dashboard_expressions(path: Path) -> Iterator[Expression]:
    document = load_dashboard(path)
    for variable in variables(document):
        if variable["type"] == "query":
            selector, _ = variable_query(variable)
            origin = f"{path.name}: variable ${variable['name']}"
            yield Expression(origin, selector, "variable", path.name)
    for panel in panels(document):
        for target in panel["targets"]:
            origin = f"{path.name}: panel {panel['title']!r} query {target['refId']}"
            yield Expression(origin, target["expr"], "panel", path.name)


def rule_expressions(path: Path) -> Iterator[Expression]:
    for group in load_rules(path)["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            yield Expression(f"{path.name}: {name}", rule["expr"], "rule")


def all_expressions() -> list[Expression]:
    found = [e for path in DASHBOARD_FILES for e in dashboard_expressions(path)]
    return found + [e for path in RULE_FILES for e in rule_expressions(path)]


def recorded_names() -> set[str]:
    return {
        rule["record"]
        for path in RULE_FILES
        for group in load_rules(path)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Grafana's variables (``$x``, ``${x}``, ``[[x]]``) replaced; an unknown one fails."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name not in values:
            raise KeyError(f"no value for variable ${name} in {text!r}")
        return values[name]

    return VARIABLE.sub(replace, text)


def regex_of(values: list[str]) -> str:
    """A multi-value variable as Grafana writes it into a regex matcher."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


# ---- the lexer ---------------------------------------------------------------------

AGGREGATIONS: Final = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan", "start", "end"}
)
GROUPING: Final = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_TOKEN: Final = re.compile(
    r"""(?P<space>\s+)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<number>[0-9.][0-9a-zA-Z_.]*)
      | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
      | (?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Selector:
    """A metric name an expression selects, its label matchers and what surrounds it."""

    name: str
    matchers: str  # the text between { and }, "" without braces
    range: str | None  # the text between [ and ] right after it
    function: str | None  # the function or aggregation whose "(" precedes it directly


def _tokens(text: str) -> tuple[list[tuple[str, str]], list[int]]:
    """Tokens ``(kind, text)`` without whitespace, and where each starts in ``text``."""
    tokens, starts = [], []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
            starts.append(match.start())
    return tokens, starts


def _closing(tokens: list[tuple[str, str]], start: int, opening: str, closing: str) -> int:
    """Index of the token closing the bracket opened at ``start``."""
    depth = 0
    for index in range(start, len(tokens)):
        if tokens[index] == ("other", opening):
            depth += 1
        elif tokens[index] == ("other", closing):
            depth -= 1
            if depth == 0:
                return index
    raise ValueError(f"unbalanced {opening}{closing} in {tokens}")


def selectors(text: str) -> list[Selector]:
    tokens, starts = _tokens(text)
    found: list[Selector] = []
    index = 0
    while index < len(tokens):
        kind, value = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        if kind == "other" and value == "{":
            raise ValueError(f"a selector without a metric name in {text!r}")
        if kind != "ident":
            index += 1
            continue
        if value in GROUPING:
            # A parenthesised list of label names follows.
            index = _closing(tokens, index + 1, "(", ")") + 1
            continue
        if value in AGGREGATIONS or value in KEYWORDS or following == ("other", "("):
            index += 1
            continue
        before = tokens[index - 2] if index >= 2 and tokens[index - 1] == ("other", "(") else None
        function = before[1] if before is not None and before[0] == "ident" else None
        index += 1
        matchers = ""
        if index < len(tokens) and tokens[index] == ("other", "{"):
            end = _closing(tokens, index, "{", "}")
            matchers = text[starts[index] + 1 : starts[end]].strip()
            index = end + 1
        window = None
        if index < len(tokens) and tokens[index] == ("other", "["):
            end = _closing(tokens, index, "[", "]")
            window = text[starts[index] + 1 : starts[end]].strip()
            index = end + 1
        found.append(Selector(value, matchers, window, function))
    return found


def metric_names(text: str) -> set[str]:
    return {selector.name for selector in selectors(text)}


def is_counter(name: str) -> bool:
    return name.endswith(COUNTER_SUFFIXES)


# ---- what the scaler exports ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exported:
    """Queryable series names of a /metrics exposition, by family, with their labels."""

    families: dict[str, str]  # family name -> type
    names: dict[str, str]  # series name -> family name
    labels: dict[str, set[str]]  # series name -> label names seen


def exported(exposition: str) -> Exported:
    """Names from the families' types, so a family without samples still counts."""
    families: dict[str, str] = {}
    names: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("", "_count", "_sum"),
    }
    for family in text_string_to_metric_families(exposition):
        families[family.name] = family.type
        for suffix in suffixes.get(family.type, ("",)):
            names[family.name + suffix] = family.name
        for sample in family.samples:
            names.setdefault(sample.name, family.name)
            labels.setdefault(sample.name, set()).update(sample.labels)
    return Exported(families, names, labels)


def finite(value: str) -> bool:
    return math.isfinite(float(value))
