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
state, and a relay that expires or is removed stops contributing. Reports only hand over
their raw ``state.users``; a pass (at most every :data:`REBUILD_EVERY`, when an answer
is due) reads those that changed and applies the difference. A relay that reports more
than :data:`scaler.wire.MAX_REPORTED_USERS` users leaves its smallest counts out, so the
sum is a lower bound then. Synchronous and without I/O but one log line per relay whose
users do not validate; time comes in as ``now`` and an injected pass timer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Final

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scaler.common import logs
from scaler.wire import MAX_OVER_QUOTA, NO_USERS, OverQuota, ReportError, users_of

log = logs.get("scaler.user_quota")

#: (namespace, pod), as :class:`scaler.fleet.FleetState` keys relays.
RelayKey = tuple[str, str]
#: Refusal reasons exported even while zero (the relay's, RFC 8656 §7.2: 486).
REFUSAL_REASONS: Final = ("fleet_user_quota", "total_quota", "user_quota")

#: What an answer says while nobody is over the quota.
NOBODY: Final = OverQuota()
#: The sums are brought up to date at most this often (seconds): a pass reads the users
#: of every relay whose users changed since the last pass and applies the difference,
#: about 17 us a relay of 100 users here, so ingest never pays per report for what the
#: next report replaces. A pass is also never followed by the next sooner than
#: ``1 / PASS_SHARE`` times its own duration: passes take at most a tenth of a core (a
#: very large fleet sums less often). Relays learn a list with their next report anyway;
#: this adds at most a quarter second to that (more only for such a fleet).
REBUILD_EVERY: Final = 0.25
PASS_SHARE: Final = 0.1


class FleetUserQuota:
    """Allocations per user across the fleet, and who is at or over ``quota``."""

    def __init__(
        self,
        quota: int,
        *,
        max_listed: int = MAX_OVER_QUOTA,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``timer`` measures how long a pass takes (to bound their share of the CPU)."""
        if quota < 1:
            raise ValueError("the fleet user quota must be at least 1")
        if not 0 < max_listed <= MAX_OVER_QUOTA:
            raise ValueError(f"an answer lists between 1 and {MAX_OVER_QUOTA} users")
        self.quota = quota
        self.max_listed = max_listed
        self.timer = timer
        # Each live relay's newest ``state.users`` as it came (raw JSON); what the sums
        # hold of each relay (read at a pass); the relays changed since the last pass.
        self._raw: dict[RelayKey, msgspec.Raw] = {}
        self._counted: dict[RelayKey, Mapping[str, int]] = {}
        self._changed: set[RelayKey] = set()
        self._totals: dict[str, int] = {}
        self._over: dict[str, int] = {}
        self._over_changed = False
        self._answer = NOBODY
        self._next_pass = -float("inf")
        #: Relays whose users did not validate (counted as none), and what was wrong.
        self.invalid: dict[RelayKey, str] = {}

    # ---- changes (per report: O(1), nothing read or summed) -----------------------

    def replace(self, relay: RelayKey, users: msgspec.Raw) -> None:
        """``relay``'s newest snapshot says ``users`` (``state.users``, raw JSON)."""
        if users == NO_USERS:
            self.drop(relay)
        elif self._raw.get(relay) is not users:
            self._raw[relay] = users
            self._changed.add(relay)

    def drop(self, relay: RelayKey) -> None:
        """``relay`` left the fleet (expired, or its pod was deleted): it counts no more."""
        if self._raw.pop(relay, None) is not None or relay in self._counted:
            self._changed.add(relay)

    # ---- summing ------------------------------------------------------------------

    def _read(self, relay: RelayKey) -> Mapping[str, int]:
        raw = self._raw.get(relay)
        if raw is None:
            self.invalid.pop(relay, None)
            return {}
        try:
            users = users_of(raw)
        except ReportError as error:
            self.invalid[relay] = str(error)
            log.warning("relay users ignored", namespace=relay[0], pod=relay[1], error=str(error))
            return {}
        self.invalid.pop(relay, None)
        return users

    def _pass(self) -> None:
        """Apply what changed since the last pass: per relay, only the users whose count
        moved (from one report of a relay to the next, few do)."""
        counted = self._counted
        for relay in self._changed:
            new = self._read(relay)
            old = counted.get(relay, {})
            if new == old:
                continue
            old_count = old.get
            for user, count in new.items():
                if count != old_count(user):
                    self._change(user, count - old_count(user, 0))
            for user, count in old.items():
                if user not in new:
                    self._change(user, -count)
            if new:
                counted[relay] = new
            else:
                counted.pop(relay, None)
        self._changed.clear()
        if self._over_changed:
            self._over_changed = False
            self._list()

    def _change(self, user: str, delta: int) -> None:
        total = self._totals.get(user, 0) + delta
        if total > 0:
            self._totals[user] = total
        else:
            self._totals.pop(user, None)
        if total >= self.quota:
            self._over_changed |= user not in self._over
            self._over[user] = total
        elif self._over.pop(user, None) is not None:
            self._over_changed = True

    def _list(self) -> None:
        over = self._over
        if len(over) <= self.max_listed:
            listed = sorted(over)
        else:  # the ones furthest over, then by digest: every replica lists the same
            ranked = sorted(over, key=lambda user: (-over[user], user))
            listed = sorted(ranked[: self.max_listed])
        self._answer = OverQuota(users=listed, truncated=len(over) > len(listed))

    def _fresh(self) -> None:
        if self._changed:
            self._pass()

    # ---- reading ---------------------------------------------------------------

    def total(self, user: str) -> int:
        """Allocations of ``user`` (a digest) on the live relays, as last reported."""
        self._fresh()
        return self._totals.get(user, 0)

    @property
    def over_quota(self) -> int:
        """How many users are at or over the quota now."""
        self._fresh()
        return len(self._over)

    @property
    def users(self) -> int:
        """How many users have allocations on the live relays."""
        self._fresh()
        return len(self._totals)

    def answer(self, now: float | None = None) -> OverQuota:
        """The ``over_quota`` answer: at most ``max_listed`` users, the ones furthest over
        first. With ``now`` (monotonic seconds, as ingest passes it) the sums are redone
        at most every :data:`REBUILD_EVERY` (longer for a very large fleet); without, the
        answer is exact. The same object while the list stays the same."""
        if self._changed and (now is None or now >= self._next_pass):
            started = self.timer()
            self._pass()
            if now is not None:
                took = self.timer() - started
                self._next_pass = now + max(REBUILD_EVERY, took / PASS_SHARE)
        return self._answer


class QuotaRefusals:
    """``stunner_allocations_refused_total`` per relay, from ``state.refused_total``:
    what earlier instances of the pod carried in plus the current instance's counts, so
    a relay restart never lowers it (as the fleet state keeps its own counters). A relay
    that leaves the fleet is remembered, up to ``remember`` of them, so it continues
    where it was if it comes back."""

    def __init__(self, remember: int = 1000) -> None:
        self.remember = remember
        # (namespace, pod) -> [gateway, instance, base, current]
        self._live: dict[RelayKey, _Refused] = {}
        self._gone: OrderedDict[RelayKey, _Refused] = OrderedDict()

    def observe(
        self, relay: RelayKey, gateway: str, instance: str, refused: Mapping[str, int]
    ) -> None:
        """An accepted report's snapshot (its relay's newest): ``refused`` is its counts."""
        held = self._live.get(relay)
        if held is None:
            held = self._gone.pop(relay, None)
            if held is None:
                held = _Refused(gateway, instance)
            self._live[relay] = held
        if held.instance != instance:  # a new instance: the old one's counts carry over
            for reason, count in held.current.items():
                held.base[reason] = held.base.get(reason, 0) + count
            held.instance, held.current = instance, {}
        held.gateway = gateway
        held.current = dict(refused)

    def retire(self, relay: RelayKey) -> None:
        """``relay`` left the fleet: no series while it is gone."""
        held = self._live.pop(relay, None)
        if held is not None:
            self._gone[relay] = held
            while len(self._gone) > self.remember:
                self._gone.popitem(last=False)

    def series(self) -> Iterator[tuple[tuple[str, str, str, str], int]]:
        """``((namespace, gateway, pod, reason), total)`` of every live relay."""
        for (namespace, pod), held in self._live.items():
            for reason in sorted({*REFUSAL_REASONS, *held.base, *held.current}):
                total = held.base.get(reason, 0) + held.current.get(reason, 0)
                yield (namespace, held.gateway, pod, reason), total


class _Refused:
    __slots__ = ("base", "current", "gateway", "instance")

    def __init__(self, gateway: str, instance: str) -> None:
        self.gateway = gateway
        self.instance = instance
        self.base: dict[str, int] = {}
        self.current: dict[str, int] = {}


class QuotaCollector(Collector):
    """``stunner_allocations_refused_total`` always; with ``--fleet-user-quota`` also
    ``stunner_scaler_users_over_quota`` (a count, never a label per user) and
    ``stunner_scaler_fleet_user_quota``. ``stunner_*`` families, so only the exporting
    replica has them (:mod:`scaler.exporter`: ``leading`` is read at every scrape)."""

    def __init__(
        self,
        refusals: QuotaRefusals,
        quota: FleetUserQuota | None = None,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.refusals = refusals
        self.quota = quota
        self.leading = leading

    def collect(self) -> Iterator[Metric]:
        if not self.leading():
            return
        refused = CounterMetricFamily(
            "stunner_allocations_refused",
            "Allocates the relay refused with 486 (Allocation Quota Reached), by reason: "
            "user_quota, total_quota, fleet_user_quota",
            labels=["namespace", "gateway", "pod", "reason"],
        )
        for labels, total in self.refusals.series():
            refused.add_metric(list(labels), total)
        yield refused
        if self.quota is None:
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
