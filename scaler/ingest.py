"""Report ingest: from an HTTP request's parts to a fleet change and an answer.

Synchronous and free of aiohttp, so every rule of the wire contract (:mod:`scaler.wire`)
is tested with plain values (``tests/scaler/test_ingest.py``). A rejected report changes
nothing, is counted under its ``result`` and is logged once.
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from scaler.binding import PodBinding
from scaler.common import logs
from scaler.fleet import FleetFull, FleetState, Outcome
from scaler.user_quota import FleetUserQuota, QuotaRefusals
from scaler.wire import MAX_BODY_BYTES, Report, ReportError, decode, to_builtins

log = logs.get("scaler.ingest")

# Every value of turnscale_reports_total{result}, exported even while zero.
RESULTS = (
    *(outcome.value for outcome in Outcome),
    "invalid",
    "unauthorized",
    "too_large",
    "unsupported_media_type",
    "fleet_full",
    "forbidden",
    "unknown_pod",
)

#: How far ahead of the scaler's wall clock a report's ``started_at``/``sent_at`` may be
#: (clock skew between nodes); beyond it a report could take over a pod "from the future".
MAX_CLOCK_AHEAD: Final = 5.0
#: Rejections are logged at most this often per result (a flood of bad reports must not
#: flood the log); each log line says how many were left unsaid since the last.
LOG_EVERY: Final = 1.0


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
    """The rules a report passes before it changes the fleet, in order: token, content
    type, size, the contract (:func:`scaler.wire.decode`), timestamps not from the future,
    and with ``binding`` the pod it names sending it from its own IP.

    With ``user_quota`` (``--fleet-user-quota``) an accepted report's per-user counts
    replace its relay's, a relay leaving the fleet stops counting, and every 202 answer
    lists the users at or over the quota (``over_quota``, :class:`scaler.wire.OverQuota`).
    """

    def __init__(
        self,
        fleet: FleetState,
        token: str | None = None,
        *,
        binding: PodBinding | None = None,
        wall_clock: Callable[[], float] = time.time,
        log_clock: Callable[[], float] = time.monotonic,
        user_quota: FleetUserQuota | None = None,
    ) -> None:
        self.fleet = fleet
        self.user_quota = user_quota
        if user_quota is not None:
            fleet.on_leave.append(user_quota.drop)
        #: Allocates each relay refused with 486, by reason (``state.refused_total``).
        self.refusals = QuotaRefusals(fleet.max_relays)
        fleet.on_leave.append(self.refusals.retire)
        self.stats = IngestStats()
        self.binding = binding
        self.wall_clock = wall_clock
        self._token = token.encode() if token else None
        self._log_clock = log_clock
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
        self._answered: object = None
        self._answered_body: dict[str, object] = {}

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
            self._check_not_ahead(report)
        except ReportError as exc:
            return self._reject(400, "invalid", str(exc), peer)
        if self.binding is not None:
            identity = report.relay
            refusal = self.binding.refusal(identity.namespace, identity.pod, peer)
            if refusal is not None:
                return self._reject(refusal.status, refusal.result, refusal.message, peer)
        try:
            # A pod the watch knows is never locked out by --max-relays: the pods bound
            # the fleet then, and an unbound scaler has the limit to keep labels bounded.
            outcome = self.fleet.apply(report, now, bounded=self.binding is None)
        except ReportError as exc:
            return self._reject(400, "invalid", str(exc), peer)
        except FleetFull as exc:
            return self._reject(503, "fleet_full", str(exc), peer)
        self.stats.reports[outcome.value] += 1
        if outcome in (Outcome.ACCEPTED, Outcome.LATE):
            self.stats.events += len(report.events)
            answer: dict[str, object] = {"result": outcome.value, "seq": report.seq}
            if outcome is Outcome.ACCEPTED:  # the relay's newest snapshot: it counts
                identity, state = report.relay, report.state
                key = (identity.namespace, identity.pod)
                self.refusals.observe(key, identity.gateway, identity.instance, state.refused_total)
                if self.user_quota is not None:
                    self.user_quota.replace(key, state.users)
            if self.user_quota is not None:
                answer["over_quota"] = self._over_quota(now)
            return Answer(202, answer)
        return Answer(200, {"result": outcome.value, "seq": report.seq})

    def _over_quota(self, now: float) -> dict[str, object]:
        assert self.user_quota is not None
        answer = self.user_quota.answer(now)
        if answer is not self._answered:  # built once per change, not once per report
            self._answered, self._answered_body = answer, to_builtins(answer)
        return self._answered_body

    def _authorized(self, header: str | None) -> bool:
        assert self._token is not None
        scheme, _, credential = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            # aiohttp keeps undecodable header bytes as surrogates: such a token is wrong.
            given = credential.strip().encode()
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(given, self._token)

    def _check_not_ahead(self, report: Report) -> None:
        latest = self.wall_clock() + MAX_CLOCK_AHEAD
        for name, value in (
            ("relay.started_at", report.relay.started_at),
            ("sent_at", report.sent_at),
        ):
            if value > latest:
                raise ReportError(
                    f"{value:.3f} at `{name}` is more than {MAX_CLOCK_AHEAD:g} s ahead of the "
                    "scaler's clock"
                )

    def _reject(self, status: int, result: str, message: str, peer: str | None) -> Answer:
        self.stats.reports[result] += 1
        now = self._log_clock()
        last = self._logged_at.get(result)
        if last is not None and now - last < LOG_EVERY:
            self._unlogged[result] += 1
        else:
            self._logged_at[result] = now
            suppressed = self._unlogged.pop(result, 0)
            log.warning(
                "report rejected",
                status=status,
                result=result,
                error=message,
                peer=peer,
                **({"suppressed": suppressed} if suppressed else {}),
            )
        return Answer(status, {"error": message})
