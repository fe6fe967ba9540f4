"""The report pusher: a relay's state and allocation events, pushed to every scaler.

Wire contract v1 (:mod:`scaler.wire`). Every report carries the relay's full state, so a
scaler is exact again with the first report that gets through; events (what a
snapshot cannot carry) wait in a bounded buffer per scaler address.

- A report follows an allocation change within 50 ms; changes in that window go
  out as one report. Without changes, a heartbeat every ``interval``.
- A scaler URL whose host resolves to several addresses (a headless Service in
  front of several scaler replicas) is pushed to at every address, each by its
  own task, so one slow or dead replica never delays the others.
- A report is retried as-is (same ``seq``) until a definitive answer, with
  exponential backoff and jitter. If an attempt was applied but its answer lost,
  the retry is a harmless duplicate: events are counted once. Retries are never
  further apart than the heartbeat ``interval``, so a scaler that comes back is
  exact again within one interval.
- Answers may carry the fleet user quota (``over_quota``, :class:`scaler.wire.OverQuota`):
  each scaler address's list goes to :attr:`ReportPusher.fleet_quota`
  (:mod:`relay.reporting.fleet_quota`), which the allocation table asks on every Allocate.
  An answer body is read up to :data:`scaler.wire.MAX_ANSWER_BYTES`; beyond that it is
  not decoded (no list: fail open).
- The packet path never waits on any of this: the relay calls
  :meth:`ReportPusher.changed` and :meth:`ReportPusher.record`, which only touch
  memory and set an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from relay.core.allocation import AllocationTable
from relay.core.stats import RelayStats
from relay.reporting.config import ReportingConfig
from relay.reporting.fleet_quota import TTL_INTERVALS, FleetQuota
from scaler import wire
from scaler.common import backoff, logs

log = logs.get("relay.pusher")

BATCH_WINDOW: Final = 0.05
REQUEST_TIMEOUT: Final = 2.0
BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 5.0
# Events waiting for one scaler address; beyond it the oldest are dropped and counted.
EVENT_BUFFER: Final = 20_000
REPORT_PATH: Final = "/v1/reports"


Resolver = Callable[[str], Awaitable[list[str] | None]]


class StateSource(Protocol):
    """What the relay exposes to the pusher."""

    @property
    def draining(self) -> bool: ...

    def snapshot(self) -> wire.RelayState: ...


@dataclass(frozen=True, slots=True)
class Identity:
    pod: str
    namespace: str
    gateway: str
    instance: str = field(default_factory=lambda: secrets.token_hex(8))
    started_at: float = field(default_factory=time.time)

    def wire(self) -> wire.RelayIdentity:
        return wire.RelayIdentity(
            self.pod, self.namespace, self.gateway, self.instance, self.started_at
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One scaler address: the URL to connect to and the Host header to send."""

    url: str
    host_header: str


def endpoints(url: str, addresses: Sequence[str]) -> list[Endpoint]:
    """The report URL at each resolved address of ``url``'s host."""
    parts = urlsplit(url)
    host_header = parts.netloc.rpartition("@")[2]
    port = f":{parts.port}" if parts.port else ""
    out = []
    for address in addresses:
        literal = f"[{address}]" if ":" in address else address
        target = parts._replace(netloc=literal + port, path=REPORT_PATH, query="", fragment="")
        out.append(Endpoint(urlunsplit(target), host_header))
    return out


class EventBuffer:
    """Bounded FIFO of events for one scaler address; counts what it had to drop."""

    def __init__(self, limit: int = EVENT_BUFFER) -> None:
        self._events: deque[wire.Event] = deque()
        self.limit = limit
        self.dropped = 0

    def add(self, event: wire.Event) -> None:
        if len(self._events) >= self.limit:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)

    def take(self, most: int) -> list[wire.Event]:
        count = min(most, len(self._events))
        return [self._events.popleft() for _ in range(count)]

    def __len__(self) -> int:
        return len(self._events)


class Target:
    """Pushing to one scaler address: its own events, in-flight report and backoff."""

    def __init__(self, endpoint: Endpoint, event_buffer: int) -> None:
        self.endpoint = endpoint
        self.buffer = EventBuffer(event_buffer)
        self.wake = asyncio.Event()
        self.inflight: bytes | None = None
        self.failures = 0
        self.sent = 0
        self.rejected = 0
        # The scaler answers but will not count this relay: old_instance (a newer instance
        # of this pod holds its place), forbidden (not from this pod's IP), unauthorized.
        self.refused_as: str | None = None
        self.refused_in_a_row = 0
        self.task: asyncio.Task[None] | None = None

    @property
    def refusing(self) -> str | None:
        """The refusal, once it is more than one report in a row (one can be a race)."""
        return self.refused_as if self.refused_in_a_row > 1 else None


class ReportPusher:
    def __init__(
        self,
        scalers: Sequence[str],
        identity: Identity,
        source: StateSource,
        *,
        token: str | None = None,
        interval: float = 5.0,
        batch_window: float = BATCH_WINDOW,
        resolve: Resolver | None = None,
        event_buffer: int = EVENT_BUFFER,
    ) -> None:
        self.scalers = list(scalers)
        self.identity = identity
        self.source = source
        self.interval = interval
        self.batch_window = batch_window
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._seq = 0
        self._targets: dict[Endpoint, Target] = {}
        self._by_url: dict[str, set[Endpoint]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._resolver: asyncio.Task[None] | None = None
        self._resolve_host = resolve or resolve_host
        self.event_buffer = event_buffer
        #: The scalers' over-quota lists, each lapsing two report intervals after its answer.
        self.fleet_quota = FleetQuota(TTL_INTERVALS * interval)

    # ---- called by the relay (memory only, never waits) ------------------------

    def changed(self) -> None:
        """An allocation was created or deleted, or draining began."""
        for target in self._targets.values():
            target.wake.set()

    def record(self, event: wire.Event) -> None:
        for target in self._targets.values():
            target.buffer.add(event)
        self.changed()

    # ---- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        self._session = aiohttp.ClientSession(timeout=timeout)
        await self._resolve()
        self._resolver = asyncio.create_task(self._resolve_forever(), name="scaler-resolver")

    async def close(self, final_within: float = REQUEST_TIMEOUT) -> None:
        """Stop pushing; send every scaler one final report (it says zero allocations
        when the relay has closed them all), bounded by ``final_within`` seconds."""
        if self._resolver is not None:
            self._resolver.cancel()
        targets = list(self._targets.values())
        for target in targets:
            if target.task is not None:
                target.task.cancel()
        tasks = [t.task for t in targets if t.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=final_within)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(final_within):
                await asyncio.gather(*(self._final(t) for t in targets))
        if self._session is not None:
            await self._session.close()

    async def _final(self, target: Target) -> None:
        if target.inflight is not None:
            await self._post(target)
        target.inflight = self._build(target)
        await self._post(target)

    # ---- status -----------------------------------------------------------------

    def status(self) -> dict[str, object]:
        return {
            "seq": self._seq,
            "events_dropped": self.events_dropped,
            "fleet_quota": self.fleet_quota.status(),
            "scalers": {
                target.endpoint.url: {
                    "reports_sent": target.sent,
                    "reports_rejected": target.rejected,
                    "failing": target.failures,
                    "refusing": target.refusing,
                    "refused_in_a_row": target.refused_in_a_row,
                    "events_waiting": len(target.buffer),
                    "events_dropped": target.buffer.dropped,
                }
                for target in self._targets.values()
            },
        }

    @property
    def events_dropped(self) -> int:
        return sum(target.buffer.dropped for target in self._targets.values())

    # ---- resolving scaler addresses ----------------------------------------------

    async def _resolve_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._resolve()

    async def _resolve(self) -> None:
        wanted: set[Endpoint] = set()
        for url in self.scalers:
            addresses = await self._resolve_host(urlsplit(url).hostname or "")
            if addresses is None:  # DNS trouble: keep pushing where we pushed before
                wanted.update(e for e in self._targets if e in self._by_url.get(url, ()))
                continue
            self._by_url[url] = set(endpoints(url, addresses))
            wanted.update(self._by_url[url])
        for endpoint in wanted - self._targets.keys():
            target = Target(endpoint, self.event_buffer)
            self._targets[endpoint] = target
            target.task = asyncio.create_task(self._push_forever(target), name="report-push")
            log.info("pushing reports", scaler=endpoint.url)
        for endpoint in self._targets.keys() - wanted:
            gone = self._targets.pop(endpoint)
            self.fleet_quota.forget(endpoint.url)
            if gone.task is not None:
                gone.task.cancel()
            log.info("scaler address gone", scaler=endpoint.url)

    # ---- pushing ------------------------------------------------------------------

    def _build(self, target: Target) -> bytes:
        self._seq += 1
        report = wire.Report(
            version=wire.VERSION,
            relay=self.identity.wire(),
            seq=self._seq,
            sent_at=time.time(),
            draining=self.source.draining,
            state=self.source.snapshot(),
            events=target.buffer.take(wire.MAX_EVENTS),
        )
        return wire.encode(report)

    async def _push_forever(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        last = -float("inf")
        target.wake.set()  # a new scaler address gets the full state at once
        while True:
            if target.failures:
                # Never slower than the heartbeat: a scaler that comes back is exact
                # again within one report interval, however long it was away.
                ceiling = min(BACKOFF_MAX, self.interval)
                await asyncio.sleep(
                    backoff.delay(target.failures, initial=BACKOFF_FIRST, maximum=ceiling)
                )
            else:
                wait = last + self.interval - loop.time()
                # asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow a
                # cancellation that lands as the event fires, and close() would hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0)):
                        await target.wake.wait()
                spacing = last + self.batch_window - loop.time()
                if spacing > 0:  # changes inside the window share one report
                    await asyncio.sleep(spacing)
            target.wake.clear()
            if target.inflight is None:
                target.inflight = self._build(target)
            recovered = target.failures > 0
            last = loop.time()
            await self._post(target)
            if target.inflight is None and (recovered or len(target.buffer)):
                target.wake.set()  # what piled up meanwhile goes out at once

    async def _post(self, target: Target) -> None:
        """One attempt; clears ``inflight`` on a definitive answer."""
        assert self._session is not None and target.inflight is not None
        headers = {**self._headers, "Host": target.endpoint.host_header}
        try:
            async with self._session.post(
                target.endpoint.url, data=target.inflight, headers=headers
            ) as response:
                body = await _read_bounded(response, wire.MAX_ANSWER_BYTES)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self._failed(target, f"{type(error).__name__}: {error}")
            return
        self._note_refusal(target, _refusal(status, body))
        if status == 202:
            # An accepted report's answer says who is over the fleet quota now; a body
            # without that list (an old scaler, or the quota off) lists nobody.
            self.fleet_quota.answered(
                target.endpoint.url, None if body is None else wire.over_quota_from(body)
            )
        body = body or b""
        if status in (200, 202):
            target.inflight = None
            target.sent += 1
            if target.failures:
                log.info("scaler reachable again", scaler=target.endpoint.url)
            target.failures = 0
        elif status in (400, 401, 403, 413, 415):
            # Definitive: retrying the same bytes cannot succeed. The next report is fresh.
            target.inflight = None
            target.rejected += 1
            log.error(
                "report rejected by scaler",
                scaler=target.endpoint.url,
                status=status,
                answer=body[:300].decode(errors="replace"),
            )
        else:
            self._failed(target, f"HTTP {status}")

    def _note_refusal(self, target: Target, refusal: str | None) -> None:
        """Count refusals in a row; say so once they are more than one, and once over."""
        if refusal is None:
            if target.refusing is not None:
                log.info("scaler counts this relay again", scaler=target.endpoint.url)
            target.refused_as, target.refused_in_a_row = None, 0
            return
        if refusal != target.refused_as:
            target.refused_as, target.refused_in_a_row = refusal, 0
        target.refused_in_a_row += 1
        count = target.refused_in_a_row
        if count == 2 or (count > 2 and count & (count - 1) == 0):  # 2, 4, 8, ...: rare
            log.warning(
                "scaler refuses this relay's reports",
                scaler=target.endpoint.url,
                refusal=refusal,
                in_a_row=count,
                hint=_REFUSAL_HINTS[refusal],
            )

    def _failed(self, target: Target, reason: str) -> None:
        target.failures += 1
        if target.failures in (1, 10) or target.failures % 100 == 0:
            log.warning(
                "scaler unreachable, retrying",
                scaler=target.endpoint.url,
                failures=target.failures,
                reason=reason,
            )


_REFUSAL_HINTS: Final = {
    "old_instance": "the scaler holds a newer instance of this pod (another process reports "
    "as it: check --pod)",
    "forbidden": "the scaler's pod watch does not place this pod at the address the reports "
    "come from (--pod, --namespace, or NAT between relay and scaler)",
    "unauthorized": "the report token differs from the scaler's (--scaler-token-file)",
}


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The answer body, or None when it is longer than ``limit`` bytes (read no further)."""
    if response.content_length is not None and response.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(status: int, body: bytes | None) -> str | None:
    """Which refusal an answer is, if any; a 200 says ``old_instance`` in its body."""
    if status == 401:
        return "unauthorized"
    if status == 403:
        return "forbidden"
    if status == 200 and body is not None and b'"old_instance"' in body:
        return "old_instance"
    return None


async def resolve_host(host: str) -> list[str] | None:
    """Every address of ``host``; None when the name cannot be resolved now."""
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as error:
        log.warning("cannot resolve scaler", host=host, error=str(error))
        return None
    return sorted({str(info[4][0]) for info in infos})


def make_pusher(
    config: ReportingConfig, stats: RelayStats, table: AllocationTable | None = None
) -> ReportPusher | None:
    """A pusher fed by the relay's counters and events; None when no scaler is configured.

    With ``table``, reports carry its allocations per user and its Allocates follow the
    scalers' fleet user quota."""
    if not config.scalers:
        return None
    identity = Identity(
        pod=config.pod,
        namespace=config.namespace,
        gateway=config.gateway,
        started_at=stats.started_at,
    )
    pusher = ReportPusher(
        config.scalers, identity, stats, token=config.token, interval=config.interval
    )
    stats.subscribe(pusher.changed)
    stats.subscribe_events(pusher.record)
    stats.reporting = pusher.status
    if table is not None:
        stats.per_user = table.users
        table.fleet_refuses = pusher.fleet_quota.refuses
    return pusher
