"""The committed dashboards and rule files are exactly what the generator makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dashboards import generate, rules, turn_fleet, turnscale_scaler
from tests.dashboards.expressions import DASHBOARD_FILES, ROOT, RULE_FILES, load_rules


@pytest.mark.parametrize("path", list(generate.ARTEFACTS), ids=lambda path: path.name)
def test_committed_file_is_what_the_generator_makes(path: Path) -> None:
    committed = path.read_text(encoding="utf-8")
    made = generate.ARTEFACTS[path]()
    assert committed == made, f"{path} is out of date: run make dashboards and commit it"


def test_the_artefacts_are_the_paths_others_reference() -> None:
    """The monitoring kustomize component references these paths: keep them stable."""
    assert set(generate.ARTEFACTS) == {*DASHBOARD_FILES, *RULE_FILES}
    names = sorted(str(path.relative_to(ROOT)) for path in generate.ARTEFACTS)
    assert names == [
        "dashboards/rules/turnscale-alerts.yaml",
        "dashboards/rules/turnscale-recording.yaml",
        "dashboards/turn-fleet.json",
        "dashboards/turnscale-scaler.json",
    ]


def test_generation_is_deterministic() -> None:
    assert turn_fleet.build() == turn_fleet.build()
    first = [make() for make in generate.ARTEFACTS.values()]
    assert first == [make() for make in generate.ARTEFACTS.values()]


def test_committed_files_decode_to_the_generated_documents() -> None:
    fleet, scaler = DASHBOARD_FILES
    assert json.loads(fleet.read_text(encoding="utf-8")) == turn_fleet.build()
    assert json.loads(scaler.read_text(encoding="utf-8")) == turnscale_scaler.build()
    recording, alerting = RULE_FILES
    assert load_rules(recording) == rules.recording_rules()
    assert load_rules(alerting) == rules.alerting_rules()


def test_check_mode_passes_on_the_committed_tree() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dashboards.generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_check_mode_names_an_outdated_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = next(iter(generate.ARTEFACTS))
    artefacts = dict(generate.ARTEFACTS)
    artefacts[path] = lambda: "something else\n"
    monkeypatch.setattr(generate, "ARTEFACTS", artefacts)
    assert generate.main(["--check"]) == 1
    assert f"out of date: {path.relative_to(ROOT)}" in capsys.readouterr().err
