"""Fleet state: what the scaler knows about every relay, pure and synchronous.

No I/O and no clock of its own: every call that depends on time takes ``now``
(monotonic seconds), so staleness and expiry are tested without sleeping.

Exported counters are ``base + current instance totals``. When a pod's relay
restarts (a new ``relay.instance``), the old instance's last totals move into
``base``, so counters stay monotonic while the scaler runs, also for a pod that
expired and came back. Reports are idempotent: the snapshot of the newest
``seq`` wins, and a replay window makes every report's events count exactly
once even when reports are repeated or arrive out of order.

Every report that moves a relay forward also feeds :attr:`FleetState.rates`
(:mod:`scaler.rates`), its relayed bytes per second; a relay that leaves the fleet
leaves the rates too.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from typing import Final, TypeVar

from scaler.histogram import Histogram
from scaler.rates import DEFAULT_WINDOW, RelayRates
from scaler.wire import (
    MAX_TRANSPORTS,
    AllocationCreated,
    DeleteReason,
    Event,
    RelayIdentity,
    RelayState,
    Report,
    ReportError,
    Side,
    Transport,
)

# Reports up to this many seqs behind the newest still have their events counted.
REPLAY_WINDOW: Final = 64
_WINDOW_MASK: Final = (1 << REPLAY_WINDOW) - 1

# Upper bounds in seconds for allocation durations: WebRTC calls last minutes to hours.
DURATION_BUCKETS: Final = (
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    43200.0,
    86400.0,
)

K = TypeVar("K", bound=str)
RelayKey = tuple[str, str]  # (namespace, pod)
GatewayKey = tuple[str, str]  # (namespace, gateway)


class Outcome(enum.Enum):
    """What a report did; the value is the ``result`` label of turnscale_reports_total."""

    ACCEPTED = "accepted"
    LATE = "late"  # an older seq not seen before: its events counted, its snapshot superseded
    DUPLICATE = "duplicate"
    OLD_INSTANCE = "old_instance"


class FleetFull(Exception):
    """A new relay arrived while ``max_relays`` are tracked (keeps label cardinality bounded)."""


@dataclass(slots=True)
class Totals:
    """Cumulative counters of one pod, as exported."""

    connections: dict[Transport, int] = field(default_factory=dict)
    bytes_received: dict[Side, int] = field(default_factory=dict)
    bytes_sent: dict[Side, int] = field(default_factory=dict)

    def add_state(self, state: RelayState) -> None:
        _add(self.connections, state.connections_total)
        _add(self.bytes_received, state.bytes_received_total)
        _add(self.bytes_sent, state.bytes_sent_total)


def _add(into: dict[K, int], values: dict[K, int]) -> None:
    for key, value in values.items():
        into[key] = into.get(key, 0) + value


def _summed(base: dict[K, int], current: dict[K, int]) -> dict[K, int]:
    out = dict(base)
    _add(out, current)
    return out


@dataclass(slots=True)
class Relay:
    """One pod's relay as last reported."""

    identity: RelayIdentity
    state: RelayState
    draining: bool
    seq: int
    last_seen: float
    seen_window: int = 0  # bit k set: seq - 1 - k has been applied
    base: Totals = field(default_factory=Totals)
    created: dict[Transport, int] = field(default_factory=dict)
    deleted: dict[tuple[Transport, DeleteReason], int] = field(default_factory=dict)
    #: The transport names its events have used (bounded by MAX_TRANSPORTS).
    event_transports: set[str] = field(default_factory=set)

    @property
    def allocations(self) -> int:
        return sum(self.state.allocations.values())

    def totals(self) -> Totals:
        """Exported counters: what earlier instances carried in plus this instance's totals."""
        return Totals(
            _summed(self.base.connections, self.state.connections_total),
            _summed(self.base.bytes_received, self.state.bytes_received_total),
            _summed(self.base.bytes_sent, self.state.bytes_sent_total),
        )


@dataclass(frozen=True, slots=True)
class FleetSelection:
    """Relays of one gateway (or the whole fleet) that count toward scaling."""

    allocations: int
    relays: int
    # Relayed bytes per second of those relays (scaler.rates).
    bandwidth: float = 0.0


def _instance_order(identity: RelayIdentity) -> tuple[float, str]:
    return (identity.started_at, identity.instance)


class FleetState:
    """Every relay the scaler tracks, keyed by (namespace, pod)."""

    def __init__(
        self,
        *,
        stale_after: float,
        expire_after: float,
        max_relays: int,
        bandwidth_window: float = DEFAULT_WINDOW,
    ) -> None:
        if not 0 < stale_after <= expire_after:
            raise ValueError("need 0 < stale_after <= expire_after")
        # Relayed bytes per second per relay, fed every report that moves a relay forward.
        self.rates: RelayRates[RelayKey] = RelayRates(bandwidth_window)
        self.stale_after = stale_after
        self.expire_after = expire_after
        self.max_relays = max_relays
        self._relays: dict[RelayKey, Relay] = {}
        # Expired relays, kept so a pod that comes back continues its counters.
        self._retired: OrderedDict[RelayKey, Relay] = OrderedDict()
        self._durations: dict[tuple[str, str, Transport], Histogram] = {}
        # Grows whenever anything that scaling reads changes; waiters compare it. Relayed
        # bandwidth aside: it moves with every report, and nothing waits on it (activity
        # follows allocations).
        self.generation = 0
        #: Called with a relay's key when it leaves the fleet (expired or removed), so
        #: what is derived from its state (the fleet user quota) stops counting it.
        self.on_leave: list[Callable[[RelayKey], None]] = []
        #: Events skipped because their relay already named MAX_TRANSPORTS other transports
        #: in its events (transport names become labels: their number stays bounded).
        self.events_over_transports = 0

    # ---- ingest -------------------------------------------------------------

    def apply(self, report: Report, now: float, *, bounded: bool = True) -> Outcome:
        """Apply one decoded report received at ``now``.

        Raises :class:`FleetFull` for a new relay beyond ``max_relays`` (unless not
        ``bounded``: its pod is known to exist) and
        :class:`ReportError` for a report whose totals go down within one instance.
        Either way nothing changes.
        """
        identity = report.relay
        key = (identity.namespace, identity.pod)
        relay = self._relays.get(key) or self._retired.get(key)
        full = bounded and len(self._relays) >= self.max_relays
        if relay is None:
            if full:
                raise FleetFull(f"already tracking {self.max_relays} relays (--max-relays)")
            relay = Relay(identity, report.state, report.draining, report.seq, now)
            self._admit(key, relay)
            self._apply_events(relay, report.events)
            self.rates.observe(key, report)
            return Outcome.ACCEPTED

        held, incoming = _instance_order(relay.identity), _instance_order(identity)
        if incoming < held:
            return Outcome.OLD_INSTANCE
        if incoming > held:
            if key not in self._relays and full:
                raise FleetFull(f"already tracking {self.max_relays} relays (--max-relays)")
            relay.base.add_state(relay.state)
            relay.identity = identity
            relay.seq, relay.seen_window = report.seq, 0
            self._take_snapshot(relay, report, now)
            self._admit(key, relay)
            self._apply_events(relay, report.events)
            self.rates.observe(key, report)
            return Outcome.ACCEPTED

        if report.seq > relay.seq:
            if key not in self._relays and full:
                raise FleetFull(f"already tracking {self.max_relays} relays (--max-relays)")
            _check_monotonic(relay.state, report.state)
            shift = report.seq - relay.seq
            window = (relay.seen_window << shift) | (1 << (shift - 1))
            relay.seq, relay.seen_window = report.seq, window & _WINDOW_MASK
            self._take_snapshot(relay, report, now)
            self._admit(key, relay)
            self._apply_events(relay, report.events)
            self.rates.observe(key, report)
            return Outcome.ACCEPTED

        behind = relay.seq - 1 - report.seq
        if report.seq == relay.seq or behind >= REPLAY_WINDOW or relay.seen_window >> behind & 1:
            return Outcome.DUPLICATE
        relay.seen_window |= 1 << behind
        self._apply_events(relay, report.events)
        return Outcome.LATE

    def _admit(self, key: RelayKey, relay: Relay) -> None:
        if key in self._retired:
            del self._retired[key]
        if key not in self._relays:
            self._relays[key] = relay
            self.generation += 1

    def _take_snapshot(self, relay: Relay, report: Report, now: float) -> None:
        if report.draining != relay.draining or report.state.allocations != relay.state.allocations:
            self.generation += 1
        relay.state, relay.draining, relay.last_seen = report.state, report.draining, now

    def _apply_events(self, relay: Relay, events: list[Event]) -> None:
        identity = relay.identity
        for event in events:
            if not _has_room(relay, event.transport):
                self.events_over_transports += 1
                continue
            if isinstance(event, AllocationCreated):
                relay.created[event.transport] = relay.created.get(event.transport, 0) + 1
                continue
            key = (event.transport, event.reason)
            relay.deleted[key] = relay.deleted.get(key, 0) + 1
            group = (identity.namespace, identity.gateway, event.transport)
            histogram = self._durations.get(group)
            if histogram is None:
                histogram = self._durations[group] = Histogram(DURATION_BUCKETS)
            histogram.observe(event.duration)

    # ---- time ---------------------------------------------------------------

    def expire(self, now: float, spare: Container[RelayKey] = ()) -> list[RelayKey]:
        """Retire relays silent for ``expire_after``; they leave every export and the totals.

        Relays in ``spare`` stay however long they are silent: their pod is known to
        exist (Kubernetes mode), so they keep their last allocations, exported as stale.
        """
        gone = [
            key
            for key, r in self._relays.items()
            if now - r.last_seen > self.expire_after and key not in spare
        ]
        for key in gone:
            self._retire(key)
        return gone

    def remove(self, namespace: str, pod: str) -> bool:
        """Forget a relay at once (its pod was deleted); counters survive a comeback."""
        if (namespace, pod) not in self._relays:
            return False
        self._retire((namespace, pod))
        return True

    def _retire(self, key: RelayKey) -> None:
        self._retired[key] = self._relays.pop(key)
        self.rates.forget(key)
        self.generation += 1
        for callback in self.on_leave:
            callback(key)
        while len(self._retired) > self.max_relays:
            self._retired.popitem(last=False)

    def is_up(self, relay: Relay, now: float) -> bool:
        return now - relay.last_seen <= self.stale_after

    # ---- reading ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._relays)

    def relays(self) -> Iterator[Relay]:
        return iter(self._relays.values())

    def get(self, namespace: str, pod: str) -> Relay | None:
        return self._relays.get((namespace, pod))

    def durations(self) -> Iterator[tuple[tuple[str, str, Transport], Histogram]]:
        return iter(self._durations.items())

    def gateways(self) -> set[GatewayKey]:
        """Every (namespace, gateway) seen: a fleet whose relays all expired still wants
        its minimum replicas, so it stays while its relays are remembered."""
        relays = (*self._relays.values(), *self._retired.values())
        keys = {(r.identity.namespace, r.identity.gateway) for r in relays}
        keys.update((namespace, gateway) for namespace, gateway, _ in self._durations)
        return keys

    def select(self, gateway: str | None = None, namespace: str | None = None) -> FleetSelection:
        """Allocations and relayed bytes/s of relays that count for scaling: not draining
        and not expired."""
        allocations = relays = 0
        bandwidth = 0.0
        for key, relay in self._relays.items():
            identity = relay.identity
            if relay.draining:
                continue
            if gateway is not None and identity.gateway != gateway:
                continue
            if namespace is not None and identity.namespace != namespace:
                continue
            allocations += relay.allocations
            bandwidth += self.rates.rate(key)
            relays += 1
        return FleetSelection(allocations, relays, bandwidth)


def _has_room(relay: Relay, transport: str) -> bool:
    """Whether events of ``transport`` can be counted for ``relay``: a name it has used
    before, or one more while it has named fewer than :data:`MAX_TRANSPORTS`."""
    named = relay.event_transports
    if transport in named:
        return True
    if len(named) >= MAX_TRANSPORTS:
        return False
    named.add(transport)
    return True


def _check_monotonic(held: RelayState, incoming: RelayState) -> None:
    for name in ("connections_total", "bytes_received_total", "bytes_sent_total"):
        before: dict[str, int] = getattr(held, name)
        after: dict[str, int] = getattr(incoming, name)
        for key, value in before.items():
            if after.get(key, 0) < value:
                raise ReportError(
                    f"`state.{name}.{key}` went down within one instance "
                    f"({value} -> {after.get(key, 0)}); a restarted relay needs a new instance"
                )
