"""A small typed vocabulary for the Grafana dashboard JSON model, and its renderer.

Only what the turnscale dashboards use: Prometheus queries, time series and stat
panels in rows, a data source variable and multi-value query variables. Rendering
is deterministic (panel ids and grid positions follow the order of definition),
so a regenerated dashboard is byte-for-byte the committed one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

JSON = dict[str, Any]

# Panels and variables query whichever Prometheus data source the viewer picks.
DATASOURCE: Final[JSON] = {"type": "prometheus", "uid": "${datasource}"}
# Grafana 10.4 / 11.x dashboards; newer Grafana migrates forward on load.
SCHEMA_VERSION: Final = 39
GRID_WIDTH: Final = 24
ROW_HEIGHT: Final = 1


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL query of a panel and the legend of the series it returns."""

    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: Literal["timeseries", "stat"] = "timeseries"
    width: int = 12
    height: int = 8
    stack: bool = False
    # Series whose legend matches this regex are drawn below the axis (e.g. bytes sent).
    negative: str | None = None
    # Dashed lines on a time series, colour steps on a stat.
    thresholds: tuple[float, ...] = ()
    decimals: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True, slots=True)
class Variable:
    """A multi-value query variable filled from ``label_values(<selector>, <label>)``."""

    name: str
    label: str
    description: str
    query: str
    # What "All" sends; None makes Grafana send every value as a regex alternation.
    all_value: str | None = None


def datasource_variable() -> JSON:
    return {
        "name": "datasource",
        "label": "Data source",
        "description": "Prometheus or Mimir data source that scrapes the turnscale scaler",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "skipUrlSync": False,
    }


def query_variable(variable: Variable) -> JSON:
    return {
        "name": variable.name,
        "label": variable.label,
        "description": variable.description,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": variable.query,
        "query": variable.query,
        "refresh": 2,  # on time range change, so new relay pods show up
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": variable.all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
        "skipUrlSync": False,
    }


def _target(index: int, query: Query) -> JSON:
    return {
        "datasource": DATASOURCE,
        "refId": chr(ord("A") + index),
        "expr": query.expr,
        "legendFormat": query.legend,
        "range": True,
        "instant": False,
        "editorMode": "code",
    }


def _thresholds(panel: Panel) -> JSON:
    steps: list[JSON] = [{"color": "green", "value": None}]
    steps += [{"color": "red", "value": value} for value in panel.thresholds]
    return {"mode": "absolute", "steps": steps}


def _timeseries(panel: Panel) -> tuple[JSON, JSON]:
    defaults: JSON = {
        "unit": panel.unit,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineInterpolation": "linear",
            "lineWidth": 1,
            "fillOpacity": 30 if panel.stack else 10,
            "showPoints": "never",
            "spanNulls": False,
            "axisPlacement": "auto",
            "axisLabel": "",
            "scaleDistribution": {"type": "linear"},
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "dashed" if panel.thresholds else "off"},
        },
        "thresholds": _thresholds(panel),
        "mappings": [],
    }
    if panel.negative is None:
        defaults["min"] = 0
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    options: JSON = {
        "legend": {
            "showLegend": True,
            "displayMode": "table",
            "placement": "bottom",
            "calcs": ["mean", "max", "lastNotNull"],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return defaults, options


def _stat(panel: Panel) -> tuple[JSON, JSON]:
    defaults: JSON = {
        "unit": panel.unit,
        "color": {"mode": "thresholds"},
        "thresholds": _thresholds(panel),
        "mappings": [],
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    options: JSON = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    }
    return defaults, options


def _panel(panel_id: int, panel: Panel, x: int, y: int) -> JSON:
    defaults, options = _timeseries(panel) if panel.kind == "timeseries" else _stat(panel)
    overrides: list[JSON] = []
    if panel.negative is not None:
        overrides.append(
            {
                "matcher": {"id": "byRegexp", "options": panel.negative},
                "properties": [{"id": "custom.transform", "value": "negative-Y"}],
            }
        )
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": options,
        "targets": [_target(index, query) for index, query in enumerate(panel.queries)],
    }


def _layout(rows: Sequence[Row]) -> list[JSON]:
    """Rows one under another; each row's panels left to right, wrapping at 24 columns."""
    out: list[JSON] = []
    panel_id = 0
    y = 0
    for row in rows:
        panel_id += 1
        out.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": ROW_HEIGHT, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += ROW_HEIGHT
        x = 0
        line_height = 0
        for panel in row.panels:
            if not 0 < panel.width <= GRID_WIDTH:
                raise ValueError(f"panel {panel.title!r}: width {panel.width} is not 1..24")
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panel_id += 1
            out.append(_panel(panel_id, panel, x, y))
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return out


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    tags: Sequence[str],
    variables: Sequence[Variable],
    rows: Sequence[Row],
) -> JSON:
    """The dashboard JSON: read-only, UTC, data source variable first."""
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": list(tags),
        "editable": False,
        "timezone": "utc",
        "weekStart": "",
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "liveNow": False,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "annotations": {"list": []},
        "links": [
            {
                "title": "turnscale dashboards",
                "type": "dashboards",
                "tags": ["turnscale"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {
            "list": [datasource_variable(), *(query_variable(v) for v in variables)],
        },
        "panels": _layout(rows),
    }
