"""The relay's counters and allocation lifecycle events, as plain state for the report pusher.

What each number means (the report wire contract, :mod:`scaler.wire`, builds on these):

* ``allocations[transport]``: allocations alive now, by the client's transport (``udp``,
  ``tcp``, ``tls`` when a certificate is configured, ``dtls`` with a dtls:// listener). A
  gauge.
* ``connections_total[transport]``: ``tcp`` counts TCP connections accepted on the TURN
  listeners (with or without an allocation); ``tls`` and ``dtls`` count TLS connections and
  DTLS sessions whose handshake completed; ``udp`` counts client 5-tuples that got an
  allocation (UDP has no connections; a 5-tuple that only sends Binding requests or fails
  authentication is not counted).
  Cumulative since the process started.
* ``bytes_received_total`` / ``bytes_sent_total``, by side: ``client`` is every byte read from
  or written to the TURN listeners (UDP datagram payloads, TCP stream bytes: STUN, ChannelData
  and everything else, headers included); ``peer`` is the UDP payload bytes received on and
  sent from relayed sockets (a datagram from a peer without a permission is counted, then
  dropped). Cumulative.
* Events: one :class:`scaler.wire.AllocationCreated` and one
  :class:`scaler.wire.AllocationDeleted` per allocation, handed to every event subscriber as
  it happens (the pusher buffers them per scaler address; nothing is kept here). An allocation's
  ``bytes_received`` / ``bytes_sent`` are its relayed socket's payload bytes (its share of the
  ``peer`` side). Deletion reasons: ``refresh_zero`` (Refresh with LIFETIME 0), ``expired``
  (not refreshed in time), ``drained`` (closed at the end of a drain or at shutdown),
  ``error`` (the client's TCP connection closed without deleting it first).

* ``users`` (optional in the contract): allocations per user, keyed by
  :func:`scaler.wire.user_digest` of the quota key, only users with allocations, at most
  :data:`scaler.wire.MAX_REPORTED_USERS` (those with the most allocations here), from
  :attr:`RelayStats.per_user`. The scalers sum them for the fleet-wide user quota.
* ``refused[reason]``: Allocates refused with 486 since start, by ``user_quota``,
  ``total_quota`` and ``fleet_user_quota`` (the allocation table counts into this dict):
  on ``/status``, and in reports as ``refused_total`` (reasons with a count only).

The packet path adds to the four byte counters (plain int attributes); nothing else here runs
per packet. :meth:`RelayStats.snapshot` (with :attr:`RelayStats.draining`, together the pusher's
``StateSource``) is what the pusher reads;
:meth:`RelayStats.subscribe` tells it when an allocation changed or draining began (the
contract wants a report within 50 ms), and :meth:`RelayStats.subscribe_events` hands it each
event as it happens (``stats.subscribe(pusher.changed)``,
``stats.subscribe_events(pusher.record)``).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping
from typing import Final

from scaler import wire

__all__ = ["RelayStats"]

TRANSPORTS: Final = ("udp", "tcp")
#: Reasons an Allocate gets 486 (the allocation table's, :mod:`relay.core.allocation`).
REFUSALS: Final = ("user_quota", "total_quota", "fleet_user_quota")


def reported_users(
    per_user: Mapping[str, int], limit: int = wire.MAX_REPORTED_USERS
) -> dict[str, int]:
    """``state.users`` of a report: digest -> allocations, the ``limit`` users with the most
    allocations when there are more (the scalers' sum is then a lower bound)."""
    items = per_user.items()
    if len(per_user) > limit:
        items = heapq.nlargest(limit, items, key=lambda item: item[1])  # type: ignore[assignment]
    return {wire.user_digest(key): count for key, count in items if count > 0}


class RelayStats:
    """Counters, gauges and lifecycle events of one relay process."""

    __slots__ = (
        "_event_listeners",
        "_listeners",
        "allocations",
        "client_rx",
        "client_tx",
        "connections",
        "draining",
        "peer_rx",
        "peer_tx",
        "per_user",
        "refused",
        "reporting",
        "started_at",
        "started_monotonic",
        "tls",
        "tls_handshake_failures",
    )

    def __init__(
        self,
        *,
        started_at: float | None = None,
        started_monotonic: float | None = None,
    ) -> None:
        self.started_at = time.time() if started_at is None else started_at
        self.started_monotonic = (
            time.monotonic() if started_monotonic is None else started_monotonic
        )
        self.allocations: dict[str, int] = dict.fromkeys(TRANSPORTS, 0)
        self.connections: dict[str, int] = dict.fromkeys(TRANSPORTS, 0)
        self.client_rx = 0
        self.client_tx = 0
        self.peer_rx = 0
        self.peer_tx = 0
        self.draining = False
        #: The pusher's status (per scaler: reports, failures, events waiting and dropped),
        #: shown on /status; None while the relay reports nowhere.
        self.reporting: Callable[[], Mapping[str, object]] | None = None
        #: TLS handshakes that failed or timed out on tls:// listeners (never logged at info).
        self.tls_handshake_failures = 0
        #: The certificates the tls:// listeners serve, shown on /status; None without TLS.
        self.tls: Callable[[], object] | None = None
        #: Allocations per quota key now (the allocation table's view); None: not reported.
        self.per_user: Callable[[], Mapping[str, int]] | None = None
        #: Allocates refused with 486, by reason (the allocation table counts into it).
        self.refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        self._listeners: list[Callable[[], None]] = []
        self._event_listeners: list[Callable[[wire.Event], None]] = []

    # -- what the relay calls

    def add_transport(self, transport: str) -> None:
        """Report ``transport`` (e.g. ``tls``) with zeros until it has allocations."""
        self.allocations.setdefault(transport, 0)
        self.connections.setdefault(transport, 0)

    def connection_accepted(self, transport: str) -> None:
        """A TCP connection was accepted on a TURN listener (TLS: its handshake is done)."""
        self.connections[transport] = self.connections.get(transport, 0) + 1

    def allocation_created(self, allocation_id: str, transport: str, at: float) -> None:
        """An allocation exists from ``at`` (unix seconds); a UDP one is a new 5-tuple."""
        self.allocations[transport] = self.allocations.get(transport, 0) + 1
        if transport == "udp":
            self.connections["udp"] += 1
        self._event(wire.AllocationCreated(at=at, allocation=allocation_id, transport=transport))

    def allocation_deleted(
        self,
        allocation_id: str,
        transport: str,
        at: float,
        *,
        reason: wire.DeleteReason,
        duration: float,
        bytes_received: int,
        bytes_sent: int,
    ) -> None:
        """An allocation ended at ``at`` after ``duration`` seconds, for ``reason``."""
        self.allocations[transport] = max(0, self.allocations.get(transport, 0) - 1)
        self._event(
            wire.AllocationDeleted(
                at=at,
                allocation=allocation_id,
                transport=transport,
                reason=reason,
                duration=max(0.0, duration),
                bytes_received=bytes_received,
                bytes_sent=bytes_sent,
            )
        )

    def set_draining(self, draining: bool = True) -> None:
        """The relay started (or stopped) draining: a change worth reporting at once."""
        self.draining = draining
        self._notify()

    # -- what the pusher calls

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (synchronously, keep it cheap: e.g. ``asyncio.Event.set``) on
        every allocation change and drain; returns a function that unsubscribes."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def subscribe_events(self, callback: Callable[[wire.Event], None]) -> Callable[[], None]:
        """Also hand every new event to ``callback`` (e.g. ``ReportPusher.record``), as it
        happens and synchronously; the buffer keeps it too. Returns an unsubscribe function."""
        self._event_listeners.append(callback)
        return lambda: (
            self._event_listeners.remove(callback) if callback in self._event_listeners else None
        )

    def snapshot(self) -> wire.RelayState:
        """The authoritative state for a report: gauges now, totals since start."""
        return wire.RelayState(
            allocations=dict(self.allocations),
            connections_total=dict(self.connections),
            bytes_received_total={"client": self.client_rx, "peer": self.peer_rx},
            bytes_sent_total={"client": self.client_tx, "peer": self.peer_tx},
            users=wire.users_field(reported_users(self.per_user()) if self.per_user else {}),
            refused_total={reason: count for reason, count in self.refused.items() if count},
        )

    def uptime(self, now_monotonic: float | None = None) -> float:
        """Seconds since the relay started."""
        now = time.monotonic() if now_monotonic is None else now_monotonic
        return max(0.0, now - self.started_monotonic)

    # -- internals

    def _event(self, event: wire.Event) -> None:
        for callback in list(self._event_listeners):
            callback(event)
        self._notify()

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback()
