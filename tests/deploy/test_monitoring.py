"""The monitoring component: scrape objects that find the scaler with honorLabels, the
PrometheusRule and the Grafana dashboard ConfigMaps equal to ``dashboards/``, and the
Grafana Alloy snippet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy import monitoring_sync
from tests.deploy.kustomize import Obj
from tests.deploy.manifests import (
    COMPONENTS,
    container_ports,
    labels_match,
    of_kind,
    one,
    pod_labels,
    render_all,
)

SCALER = "turnscale-scaler"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    return render_all(tmp_path_factory.mktemp("overlays"))


def test_the_component_carries_the_current_dashboards_and_rules() -> None:
    drift = monitoring_sync.stale()
    assert not drift, (
        "out of date with dashboards/: run `python -m tests.deploy.monitoring_sync` "
        f"({', '.join(str(p.relative_to(monitoring_sync.ROOT)) for p in drift)})"
    )


def test_every_dashboard_is_a_labelled_config_map(rendered: dict[str, list[Obj]]) -> None:
    maps = of_kind(rendered["monitoring"], "ConfigMap")
    files = {path.name: path for path in monitoring_sync.dashboard_files()}
    seen = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        for key, text in config_map["data"].items():
            seen[key] = text
            dashboard = json.loads(text)
            assert dashboard["uid"] and dashboard["title"]
            # kubectl apply keeps the last applied object in a 256 KiB annotation.
            assert len(text.encode()) < 200_000, key
    assert seen.keys() == files.keys()
    for key, text in seen.items():
        assert text == files[key].read_text(encoding="utf-8")


def test_the_prometheus_rule_holds_every_rule_group(rendered: dict[str, list[Obj]]) -> None:
    rule = one(rendered["monitoring"], "PrometheusRule", "turnscale")
    groups = rule["spec"]["groups"]
    expected = []
    for path in monitoring_sync.rule_files():
        expected.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["groups"])
    assert groups == expected
    names = [group["name"] for group in groups]
    assert len(names) == len(set(names))
    assert any("alert" in r for g in groups for r in g["rules"])
    assert any("record" in r for g in groups for r in g["rules"])


def test_scrape_objects_find_the_scaler_with_honor_labels(rendered: dict[str, list[Obj]]) -> None:
    scaler = one(rendered["monitoring"], "Deployment", SCALER)
    ports = {name for name, _, _ in container_ports(scaler)}
    (monitor,) = of_kind(rendered["monitoring"], "PodMonitor")
    assert labels_match(monitor["spec"]["selector"]["matchLabels"], pod_labels(scaler))
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert (endpoint["path"], endpoint["honorLabels"]) == ("/metrics", True)

    objects = rendered["servicemonitor"]
    assert not of_kind(objects, "PodMonitor")  # replaced, not scraped twice
    (monitor,) = of_kind(objects, "ServiceMonitor")
    services = [
        s
        for s in of_kind(objects, "Service")
        if labels_match(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert services and all(
        labels_match(s["spec"]["selector"], pod_labels(scaler)) for s in services
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services)
    assert (endpoint["path"], endpoint["honorLabels"]) == ("/metrics", True)
    # One Service only: through two, each scaler pod would be two targets (their service
    # labels differ) and every series would be scraped twice.
    assert [s["metadata"]["name"] for s in services] == [f"{SCALER}-headless"]


def test_the_alloy_snippet_scrapes_the_scaler_and_writes_to_mimir(
    rendered: dict[str, list[Obj]],
) -> None:
    text = (COMPONENTS / "monitoring" / "turnscale.alloy").read_text(encoding="utf-8")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    assert code.count("{") == code.count("}")
    scaler = one(rendered["base"], "Deployment", SCALER)
    (label,) = re.findall(r'\blabel\s*=\s*"([^"]+)"', code)
    key, _, value = label.partition("=")
    assert pod_labels(scaler)[key] == value
    assert re.search(r'names\s*=\s*\["stunner"\]', code)
    (port,) = re.findall(r'regex\s*=\s*"([^"]+)"', code)
    assert port in {name for name, _, _ in container_ports(scaler)}
    assert re.search(r"honor_labels\s*=\s*true", code)
    assert re.search(r"forward_to\s*=\s*\[prometheus\.remote_write\.mimir\.receiver\]", code)
    assert re.search(r'url\s*=\s*"https?://[^"]+/api/v1/push"', code)


def test_sync_writes_what_check_compares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    component = tmp_path / "monitoring"
    monkeypatch.setattr(monitoring_sync, "COMPONENT", component)
    monkeypatch.setattr(monitoring_sync, "RULE_FILE", component / "prometheusrule.yaml")
    monkeypatch.setattr(monitoring_sync, "ROOT", tmp_path)
    assert monitoring_sync.main(["--check"]) == 1
    assert monitoring_sync.main([]) == 0
    assert monitoring_sync.main(["--check"]) == 0
    (component / "dashboards" / "gone.json").write_text("{}")
    assert monitoring_sync.main(["--check"]) == 1
    assert monitoring_sync.main([]) == 0
    assert not (component / "dashboards" / "gone.json").exists()
