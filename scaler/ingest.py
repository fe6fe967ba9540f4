"""Report ingest: from an HTTP request's parts to a fleet change and an answer.

Synchronous and free of aiohttp, so every rule of the wire contract (:mod:`scaler.wire`)
is tested with plain values (``tests/scaler/test_ingest.py``). A rejected report changes
nothing, is counted under its ``result`` and is logged once.
"""

from __future__ import annotations

import hmac
from collections import Counter
from dataclasses import dataclass, field

from scaler.common import logs
from scaler.fleet import FleetFull, FleetState, Outcome
from scaler.wire import MAX_BODY_BYTES, ReportError, decode

log = logs.get("scaler.ingest")

# Every value of turnscale_reports_total{result}, exported even while zero.
RESULTS = (
    *(outcome.value for outcome in Outcome),
    "invalid",
    "unauthorized",
    "too_large",
    "unsupported_media_type",
    "fleet_full",
)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, object]


@dataclass(slots=True)
class IngestStats:
    """What ingest has done since start, rendered by the metrics collector."""

    reports: Counter[str] = field(default_factory=Counter)
    events: int = 0


class ReportIngest:
    def __init__(self, fleet: FleetState, token: str | None = None) -> None:
        self.fleet = fleet
        self.stats = IngestStats()
        self._token = token.encode() if token else None

    def handle(
        self,
        *,
        content_type: str,
        authorization: str | None,
        body: bytes | None,
        now: float,
        peer: str | None = None,
    ) -> Answer:
        """Answer one ``POST /v1/reports``; ``body`` is None when it was over the limit."""
        if self._token is not None and not self._authorized(authorization):
            return self._reject(401, "unauthorized", "missing or wrong bearer token", peer)
        if content_type.lower() != "application/json":
            message = f"Content-Type must be application/json, not {content_type or 'missing'!r}"
            return self._reject(415, "unsupported_media_type", message, peer)
        if body is None or len(body) > MAX_BODY_BYTES:
            message = f"report body over the {MAX_BODY_BYTES}-byte limit"
            return self._reject(413, "too_large", message, peer)
        try:
            report = decode(body)
            outcome = self.fleet.apply(report, now)
        except ReportError as exc:
            return self._reject(400, "invalid", str(exc), peer)
        except FleetFull as exc:
            return self._reject(503, "fleet_full", str(exc), peer)
        self.stats.reports[outcome.value] += 1
        if outcome in (Outcome.ACCEPTED, Outcome.LATE):
            self.stats.events += len(report.events)
            return Answer(202, {"result": outcome.value, "seq": report.seq})
        return Answer(200, {"result": outcome.value, "seq": report.seq})

    def _authorized(self, header: str | None) -> bool:
        assert self._token is not None
        scheme, _, credential = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credential.strip().encode(), self._token)

    def _reject(self, status: int, result: str, message: str, peer: str | None) -> Answer:
        self.stats.reports[result] += 1
        log.warning("report rejected", status=status, result=result, error=message, peer=peer)
        return Answer(status, {"error": message})
