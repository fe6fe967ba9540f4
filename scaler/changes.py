"""Wakes asyncio waiters when the fleet's scaling inputs change (for push-style answers)."""

from __future__ import annotations

import asyncio


class ChangeFeed:
    """A broadcast "something changed" signal; waiters re-read state when woken.

    Check state, then ``await wait()`` with no ``await`` in between, and no change
    can slip past: notification happens on the same event loop.
    """

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)

    def __len__(self) -> int:
        return len(self._waiters)
