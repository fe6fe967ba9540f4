"""Waiting in tests for something another component does by itself, always bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

WITHIN = 10.0


async def eventually(
    check: Callable[[], object], what: str = "condition", within: float = WITHIN
) -> None:
    """Poll ``check()`` until it is truthy; fail naming ``what`` after ``within`` seconds.

    Polling, not an event: the state belongs to a server under test, not to the test.
    """
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not true after {within} s")
        await asyncio.sleep(0.01)
