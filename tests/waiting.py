"""Waiting in tests for something another component does by itself, always bounded."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

WITHIN = 10.0


async def eventually(
    check: Callable[[], object | Awaitable[object]],
    what: str = "condition",
    within: float = WITHIN,
    *,
    interval: float = 0.01,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll ``check()`` (plain or async) until it is truthy; fail naming ``what`` (and
    ``explain()``, what is still wrong) after ``within`` seconds.

    Polling, not an event: the state belongs to a server under test, not to the test.
    """
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            detail = f":\n  {explain()}" if explain is not None else ""
            raise AssertionError(f"{what}: still not true after {within} s{detail}")
        await asyncio.sleep(interval)
