"""The shared log set-up: one JSON shape, and events below the level never built."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from scaler.common import logs


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def test_lines_at_or_above_the_level_are_json_and_below_it_never_processed(
    restored: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    stamp = structlog.processors.TimeStamper.__call__

    def counted(self: Any, logger: Any, name: str, event: Any) -> Any:
        built.append(event["event"])
        return stamp(self, logger, name, event)

    monkeypatch.setattr(structlog.processors.TimeStamper, "__call__", counted)
    logs.configure("warning", json=True)
    log = logs.get("turnscale.test")
    log.info("below the level", relay="relay-a")
    log.warning("at the level", relay="relay-a")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["at the level"]
    assert lines[0]["level"] == "warning" and lines[0]["relay"] == "relay-a"
    assert "timestamp" in lines[0]
    # The info event was dropped before the timestamp (or anything after it) was made.
    assert built == ["at the level"]
