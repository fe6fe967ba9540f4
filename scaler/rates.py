"""Relayed bytes per second of each relay, derived from its reports' cumulative counters.

Pure and synchronous. The only times it reads are the relay's own: a report's ``sent_at``
(when its counters were read) and ``relay.started_at`` (when they were 0). Both come from
one clock, the relay's, so neither the delay of a report on its way nor the skew between
the relay's and the scaler's clocks changes a rate; the scaler's clock plays no part.

**Relayed bytes per second** is the busier direction of the relay's traffic::

    received = bytes_received_total[client] + bytes_received_total[peer]
    sent     = bytes_sent_total[client]     + bytes_sent_total[peer]
    relayed bytes/s = max(d received / dt, d sent / dt)

A relay's NIC is full duplex: receiving and sending each have the line rate, and a relay
sends out (nearly) every byte it receives, TURN framing aside (Send and Data indications,
RFC 8656 §11; ChannelData, §12), so the two directions carry about the same and the larger
one is what saturates first. A "1 Gbit/s" NIC is therefore full at 125,000,000 relayed
bytes per second, and a target per replica is written as the NIC's line rate (less
headroom), not twice it.

**Smoothing.** Per relay instance, a sliding window of (``sent_at``, received, sent)
samples spanning ``window`` seconds: the rate is the average over the window, from the
newest sample at or before its start to the newest sample. Samples are kept at least
``window / max_samples`` apart (a closer one replaces the newest), so a relay that reports
every 50 ms keeps at most about ``max_samples + 2`` of them, and the window still spans
its full length.

**Delivery.** Only reports that move an instance forward count: a newer instance, or a
higher ``seq`` of the same one. A repeated, late (older ``seq``) or older-instance report
changes nothing, so it can never move a rate backwards, and an average over a span of the
relay's own samples is never above the highest rate between two of them. A new instance
(a restarted relay) starts a new window; its counters were 0 at ``started_at``, so while
it is younger than the window that is its first sample and its first report already gives
a rate: never negative, never a spike from the previous instance's totals. Without two
samples (an instance first seen long after it started, e.g. after the scaler restarted)
the rate is 0 until its next report. A relay clock that steps back (``sent_at`` not above
the previous one) starts the window over from that report.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from scaler.wire import Report

#: The default of ``--bandwidth-window``.
DEFAULT_WINDOW: Final = 30.0
#: Samples per window: at 30 s, one kept every 0.47 s at most.
MAX_SAMPLES: Final = 64

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Sample:
    """A relay instance's cumulative byte counters at ``at`` (its own clock, seconds)."""

    at: float
    received: int
    sent: int

    @classmethod
    def of(cls, report: Report) -> Sample:
        state = report.state
        return cls(
            report.sent_at,
            sum(state.bytes_received_total.values()),
            sum(state.bytes_sent_total.values()),
        )


@dataclass(slots=True)
class _Instance:
    """The window of one relay instance and the rate it gives."""

    order: tuple[float, str]  # (started_at, instance): which of two instances is newer
    seq: int
    samples: deque[Sample] = field(default_factory=deque)
    rate: float = 0.0


class RelayRates(Generic[Key]):
    """Relayed bytes per second per relay (any hashable key, e.g. (namespace, pod))."""

    def __init__(self, window: float = DEFAULT_WINDOW, *, max_samples: int = MAX_SAMPLES) -> None:
        if not window > 0:
            raise ValueError("the bandwidth window must be longer than 0 s")
        if max_samples < 2:
            raise ValueError("a window needs at least 2 samples")
        self.window = window
        self.max_samples = max_samples
        self._gap = window / max_samples
        self._instances: dict[Key, _Instance] = {}

    def observe(self, key: Key, report: Report) -> None:
        """Take ``report``'s counters if it moves ``key``'s relay forward; else nothing."""
        identity = report.relay
        order = (identity.started_at, identity.instance)
        sample = Sample.of(report)
        held = self._instances.get(key)
        if held is None or order > held.order:
            held = self._instances[key] = _Instance(order, report.seq)
            if 0 < sample.at - identity.started_at <= self.window:
                # The counters were 0 when this instance started (wire contract v1).
                held.samples.append(Sample(identity.started_at, 0, 0))
        elif order < held.order or report.seq <= held.seq:
            return  # older instance, repeat or late: already superseded
        else:
            held.seq = report.seq
            last = held.samples[-1]
            if sample.at <= last.at or sample.received < last.received or sample.sent < last.sent:
                held.samples.clear()  # the relay's clock stepped back: start over
        self._add(held, sample)
        held.rate = _rate(held.samples)

    def rate(self, key: Key) -> float:
        """Relayed bytes per second of ``key``'s relay over the window (0 while unknown)."""
        held = self._instances.get(key)
        return 0.0 if held is None else held.rate

    def forget(self, key: Key) -> None:
        """The relay left the fleet (expired or its pod deleted)."""
        self._instances.pop(key, None)

    def samples(self, key: Key) -> int:
        """How many samples ``key``'s window holds (its memory bound)."""
        held = self._instances.get(key)
        return 0 if held is None else len(held.samples)

    def __len__(self) -> int:
        return len(self._instances)

    def _add(self, held: _Instance, sample: Sample) -> None:
        samples = held.samples
        if len(samples) >= 2 and samples[-1].at - samples[-2].at < self._gap:
            samples[-1] = sample  # too close to the one before: the newer value wins
        else:
            samples.append(sample)
        start = sample.at - self.window
        # Keep the newest sample at or before the window's start: the span covers it all.
        while len(samples) > 2 and samples[1].at <= start:
            samples.popleft()


def _rate(samples: deque[Sample]) -> float:
    if len(samples) < 2:
        return 0.0
    first, last = samples[0], samples[-1]
    elapsed = last.at - first.at
    received = (last.received - first.received) / elapsed
    sent = (last.sent - first.sent) / elapsed
    return max(received, sent)
