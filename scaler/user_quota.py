"""The fleet-wide allocation quota per user: per-user counts summed over the live relays.

Every relay's quota (``--user-quota``) is its own, so with ten relays a user gets ten
times the quota. Relays therefore report their allocations per user (``state.users`` of
the wire contract, :mod:`scaler.wire`, keyed by :func:`scaler.wire.user_digest` of the
relay's quota key), and :class:`FleetUserQuota` keeps, for ``--fleet-user-quota N``:

- the newest snapshot's per-user counts of every relay it tracks (keyed by namespace and
  pod, as :class:`scaler.fleet.FleetState` keys relays), and their sum per user;
- the users whose sum is at or over ``N``: a relay refuses them new Allocates with 486
  (RFC 8656 §7.2, Allocation Quota Reached) while a scaler lists them.

Exact under any delivery order: only an accepted report's snapshot (the relay's newest
``seq``, or a new instance of the pod) replaces what a relay contributes, as in the fleet
state, and a relay that expires or is removed stops contributing at once. A relay that
reports more than :data:`scaler.wire.MAX_REPORTED_USERS` users leaves its smallest counts
out, so the sum is a lower bound then. Pure and synchronous: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scaler.wire import MAX_OVER_QUOTA, OverQuota

#: (namespace, pod), as :class:`scaler.fleet.FleetState` keys relays.
RelayKey = tuple[str, str]

#: What an answer says while nobody is over the quota.
NOBODY: Final = OverQuota()


class FleetUserQuota:
    """Allocations per user across the fleet, and who is at or over ``quota``."""

    def __init__(self, quota: int, *, max_listed: int = MAX_OVER_QUOTA) -> None:
        if quota < 1:
            raise ValueError("the fleet user quota must be at least 1")
        if not 0 < max_listed <= MAX_OVER_QUOTA:
            raise ValueError(f"an answer lists between 1 and {MAX_OVER_QUOTA} users")
        self.quota = quota
        self.max_listed = max_listed
        self._by_relay: dict[RelayKey, Mapping[str, int]] = {}
        self._totals: dict[str, int] = {}
        self._over: set[str] = set()
        # The answer is built once per change of the set, not once per report.
        self._answer: OverQuota | None = NOBODY

    # ---- changes --------------------------------------------------------------

    def replace(self, relay: RelayKey, users: Mapping[str, int]) -> None:
        """``relay``'s newest snapshot says ``users`` (digest -> allocations)."""
        before = self._by_relay.get(relay)
        if before is users:
            return
        if before:
            self._add(before, -1)
        if users:
            self._by_relay[relay] = users
            self._add(users, 1)
        elif before is not None:
            del self._by_relay[relay]

    def drop(self, relay: RelayKey) -> None:
        """``relay`` left the fleet (expired, or its pod was deleted): it counts no more."""
        before = self._by_relay.pop(relay, None)
        if before:
            self._add(before, -1)

    def _add(self, users: Mapping[str, int], sign: int) -> None:
        totals, over, quota = self._totals, self._over, self.quota
        for user, count in users.items():
            total = totals.get(user, 0) + sign * count
            if total > 0:
                totals[user] = total
            else:
                totals.pop(user, None)
            if total >= quota:
                if user not in over:
                    over.add(user)
                    self._answer = None
            elif user in over:
                over.discard(user)
                self._answer = None

    # ---- reading ---------------------------------------------------------------

    def total(self, user: str) -> int:
        """Allocations of ``user`` (a digest) on the live relays, as last reported."""
        return self._totals.get(user, 0)

    @property
    def over_quota(self) -> int:
        """How many users are at or over the quota now."""
        return len(self._over)

    @property
    def users(self) -> int:
        """How many users have allocations on the live relays."""
        return len(self._totals)

    def answer(self) -> OverQuota:
        """The ``over_quota`` answer: at most ``max_listed`` users, the ones furthest over
        first (then by digest, so every scaler replica lists the same ones)."""
        if self._answer is None:
            over = self._over
            if len(over) <= self.max_listed:
                listed = sorted(over)
            else:
                totals = self._totals
                ranked = sorted(over, key=lambda user: (-totals[user], user))
                listed = sorted(ranked[: self.max_listed])
            self._answer = OverQuota(users=listed, truncated=len(over) > len(listed))
        return self._answer


class UserQuotaCollector(Collector):
    """``stunner_scaler_users_over_quota``: a count, never a label per user. A
    ``stunner_scaler_*`` family, so only the exporting replica has it
    (:mod:`scaler.exporter`: ``leading`` is read at every scrape)."""

    def __init__(self, quota: FleetUserQuota, leading: Callable[[], bool] = lambda: True) -> None:
        self.quota = quota
        self.leading = leading

    def collect(self) -> Iterator[Metric]:
        if not self.leading():
            return
        yield GaugeMetricFamily(
            "stunner_scaler_users_over_quota",
            "Users whose allocations across the fleet are at or over --fleet-user-quota",
            value=self.quota.over_quota,
        )
        yield GaugeMetricFamily(
            "stunner_scaler_fleet_user_quota",
            "The fleet-wide allocation quota per user (--fleet-user-quota)",
            value=self.quota.quota,
        )
