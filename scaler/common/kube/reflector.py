"""List, then watch, Kubernetes objects; restart cleanly, forever, with backoff on trouble.

:class:`Reflector` is the loop for any kind: the scaler watches the relay pods with it, the
relay's Gateway API mode its Gateways, routes, Secrets and EndpointSlices.

The pattern of client-go's reflector: a list gives every object and a resourceVersion; a
watch from that version streams each change after it (with bookmarks that move the
version on in quiet times). A watch that ends (the server's timeout, a dropped
connection) resumes from the last version seen; ``410 Gone`` (the version is older
than the server keeps) means list again. API errors back off exponentially, with
jitter. Nothing here raises out of :meth:`Reflector.run` but cancellation.

The requests go through kubernetes-asyncio's API classes (their configuration,
credentials, URL and query building). The stream is read here rather than through
``kubernetes_asyncio.watch.Watch``: reading it directly tells when the watch is
established (HTTP 200, before any event), and Watch retries a 410 once with the same
stale version and builds a second API client per watch.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp

from scaler.common import logs
from scaler.common.backoff import Backoff

log = logs.get("scaler.kube")


class Health(Protocol):
    """Hears whether a watch is in sync with the API."""

    def health(self, up: bool) -> None: ...


class WatchStats(Protocol):
    """Counts what happens to watches (the scaler exports it; the relay logs only)."""

    def restarted(self, reason: str) -> None: ...

    def api_error(self, operation: str) -> None: ...


class NoStats:
    """Counts nothing."""

    def restarted(self, reason: str) -> None:
        pass

    def api_error(self, operation: str) -> None:
        pass


class ApiError(Exception):
    """The API answered with an error status (also as a watch ERROR event)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass(frozen=True, slots=True)
class WatchTiming:
    # The server ends each watch after a random time in this range (timeoutSeconds),
    # so many watchers do not re-watch in lockstep.
    watch_seconds: tuple[int, int] = (240, 300)
    # A watch silent for its timeout plus this long is taken as a dead connection.
    read_slack: float = 30.0
    connect_timeout: float = 10.0
    list_timeout: float = 60.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


DEFAULT_TIMING: Final = WatchTiming()

Sleep = Callable[[float], Awaitable[None]]


class Reflector:
    """List, then watch, one kind of object; subclasses say which and where it goes.

    ``_request(**query)`` makes the list (and, with ``watch=True``, the watch) request;
    ``_listed`` and ``_changed`` take the raw objects; ``what`` names them in logs.
    """

    what = "objects"

    def __init__(
        self,
        sink: Health,
        stats: WatchStats,
        *,
        timing: WatchTiming = DEFAULT_TIMING,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.health_sink = sink
        self.stats = stats
        self.timing = timing
        self.sleep = sleep
        self.rng = rng
        self.resource_version: str | None = None
        self.last_error: str | None = None

    async def _request(self, **query: Any) -> Any:
        raise NotImplementedError

    def _listed(self, items: list[Any]) -> None:
        raise NotImplementedError

    def _changed(self, event_type: str, obj: Any) -> None:
        raise NotImplementedError

    def _log_context(self) -> dict[str, str]:
        return {}

    async def run(self) -> None:
        backoff = Backoff(self.timing.backoff_initial, self.timing.backoff_max, rng=self.rng)
        expired_in_a_row = 0
        while True:
            delay = 0.0
            phase = "list"
            try:
                if self.resource_version is None:
                    await self._list()
                phase = "watch"
                delivered = await self._watch()
                self.stats.restarted("closed")
                if delivered:
                    backoff.reset()
                    expired_in_a_row = 0
                else:
                    # A watch that ends without one event: do not spin on a server that
                    # closes at once.
                    delay = backoff.next()
            except ApiError as exc:
                if exc.status == 410 and phase == "watch":
                    # Expected now and then: the version is older than the server keeps.
                    # List again at once, but back off if it keeps happening.
                    self.stats.restarted("expired")
                    self.resource_version = None
                    self._trouble(f"watch expired (410 Gone): {exc}", level="info")
                    expired_in_a_row += 1
                    delay = 0.0 if expired_in_a_row == 1 else backoff.next()
                else:
                    self._failed(phase, f"API error {exc}")
                    delay = backoff.next()
            except aiohttp.ClientConnectorError as exc:
                self._failed(phase, f"cannot connect: {exc}")
                delay = backoff.next()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                what = f"{type(exc).__name__}: {exc}"
                if phase == "list":
                    self._failed("list", what)
                else:
                    self.stats.restarted("dropped")
                    self._trouble(f"watch connection dropped ({what})", level="info")
                delay = backoff.next()
            if delay:
                await self.sleep(delay)

    def _failed(self, operation: str, what: str) -> None:
        self.stats.api_error(operation)
        if operation == "watch":
            self.stats.restarted("error")
        self._trouble(f"{operation} of {self.what} failed: {what}", level="warning")

    def _trouble(self, what: str, *, level: str) -> None:
        self.last_error = what
        self.health_sink.health(False)
        getattr(log, level)("kubernetes watch trouble", error=what, **self._log_context())

    async def _list(self) -> None:
        response = await self._request(
            _preload_content=False, _request_timeout=self.timing.list_timeout
        )
        async with response:
            body = await response.read()
            if response.status != 200:
                raise ApiError(response.status, status_message(body))
        listing = json.loads(body)
        version = (listing.get("metadata") or {}).get("resourceVersion")
        if not isinstance(version, str) or not version:
            raise ValueError(f"{self.what} list without metadata.resourceVersion")
        self._listed(list(listing.get("items") or []))
        self.resource_version = version
        self.last_error = None
        self.health_sink.health(True)

    async def _watch(self) -> bool:
        """Stream events until the server ends the watch; True if any event came."""
        low, high = self.timing.watch_seconds
        seconds = low if high <= low else int(low + (high - low) * self.rng())
        response = await self._request(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
            _preload_content=False,
            _request_timeout=(self.timing.connect_timeout, seconds + self.timing.read_slack),
        )
        delivered = False
        async with response:
            if response.status != 200:
                raise ApiError(response.status, status_message(await response.read()))
            self.last_error = None
            self.health_sink.health(True)
            async for line in response.content:
                if line.strip():
                    self._event(json.loads(line))
                    delivered = True
        return delivered

    def _event(self, event: Any) -> None:
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event {kind!r} without an object")
        if kind == "ERROR":
            raise ApiError(int(obj.get("code") or 500), str(obj.get("message") or obj))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._changed(kind, obj)
        elif kind != "BOOKMARK":
            raise ValueError(f"watch event of unknown type {kind!r}")
        if isinstance(version, str) and version:
            self.resource_version = version


def status_message(body: bytes) -> str:
    """The message of a ``Status`` answer, else the start of the body."""
    try:
        status = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return body[:200].decode("utf-8", "replace")
