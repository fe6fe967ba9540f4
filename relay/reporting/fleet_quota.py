"""What the scalers say about the fleet-wide user quota, as one relay sees it.

Every scaler with ``--fleet-user-quota`` lists, in its answer to each report, the users
(digests of quota keys, :func:`scaler.wire.user_digest`) whose allocations across the
fleet are at or over the quota. A relay refuses those users new Allocates with 486
(RFC 8656 §7.2, Allocation Quota Reached), even users it holds no allocation of; existing
allocations and their refreshes are never touched.

Failing open is the rule, so a scaler can never block a user for good:

- each scaler address's list holds for ``ttl`` seconds after the answer that carried it
  (two report intervals: the next answer normally comes within one), then lapses;
- an answer without a list (an old scaler, the quota off, a body that does not decode)
  clears that address's list at once;
- with several scalers a user is refused while *some* scaler's unlapsed list names it
  (the union): the scaler replicas each get every report, so they agree up to one
  report's timing, and a replica that stopped answering stops counting after ``ttl``.

Pure and synchronous; the clock is injected (monotonic seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final

from scaler import wire

#: How many report intervals a scaler's list holds without a fresh answer.
TTL_INTERVALS: Final = 2


@dataclass(frozen=True, slots=True)
class Listed:
    users: frozenset[str]
    until: float
    truncated: bool


class FleetQuota:
    """The union of the scalers' unlapsed over-quota lists."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise ValueError("the over-quota lists need a positive time to live")
        self.ttl = ttl
        self.clock = clock
        self._by_scaler: dict[str, Listed] = {}

    def answered(self, scaler: str, over_quota: wire.OverQuota | None) -> None:
        """``scaler`` answered a report; ``over_quota`` is its list (None: it has none)."""
        if over_quota is None or not over_quota.users:
            self._by_scaler.pop(scaler, None)
            return
        self._by_scaler[scaler] = Listed(
            frozenset(over_quota.users), self.clock() + self.ttl, over_quota.truncated
        )

    def forget(self, scaler: str) -> None:
        """``scaler``'s address is gone: its list counts no more."""
        self._by_scaler.pop(scaler, None)

    def refuses(self, quota_key: str) -> bool:
        """Whether a live scaler lists ``quota_key`` (the relay's own quota key)."""
        if not self._by_scaler:
            return False  # the common case costs no hashing
        digest = wire.user_digest(quota_key)
        return any(digest in listed.users for listed in self._live(self.clock()))

    def _live(self, now: float) -> list[Listed]:
        lapsed = [scaler for scaler, listed in self._by_scaler.items() if listed.until <= now]
        for scaler in lapsed:
            del self._by_scaler[scaler]
        return list(self._by_scaler.values())

    def users(self) -> Collection[str]:
        """Every digest a live scaler lists now."""
        now = self.clock()
        return frozenset().union(*(listed.users for listed in self._live(now)))

    def status(self) -> dict[str, object]:
        """For ``/status``: users refused fleet-wide now, and per scaler address."""
        now = self.clock()
        live = self._live(now)
        return {
            "users_over_quota": len(frozenset().union(*(listed.users for listed in live))),
            "scalers": {
                scaler: {
                    "users_over_quota": len(listed.users),
                    "truncated": listed.truncated,
                    "expires_in": round(listed.until - now, 3),
                }
                for scaler, listed in self._by_scaler.items()
            },
        }
