"""The one hand-moved clock of the tests: servers take ``clock=FakeClock()`` and the test
sets ``clock.now`` (monotonic seconds) instead of sleeping."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now
