"""The report wire contract, version 1: what a relay pushes to the scaler, as msgspec types.

``POST /v1/reports`` with ``Content-Type: application/json`` (and ``Authorization: Bearer
<token>`` when the scaler has a token). One report describes one relay process::

    {"version": 1,
     "relay": {"pod": "stunner-6f7c9-xk2p", "namespace": "stunner",
               "gateway": "stunner-gateway", "instance": "5f0c2a9e1b7d4c3f",
               "started_at": 1763701000.25},
     "seq": 17, "sent_at": 1763701042.01, "draining": false,
     "state": {"allocations": {"udp": 40, "tcp": 2},
               "connections_total": {"udp": 950, "tcp": 31},
               "bytes_received_total": {"client": 123456, "peer": 456789},
               "bytes_sent_total": {"client": 456001, "peer": 120034}},
     "events": [{"type": "allocation_created", "at": 1763701041.90,
                 "allocation": "9f2e", "transport": "udp"},
                {"type": "allocation_deleted", "at": 1763701042.00, "allocation": "77aa",
                 "transport": "tcp", "reason": "refresh_zero", "duration": 312.4,
                 "bytes_received": 1200, "bytes_sent": 3400}]}

The rules both ends keep:

- ``relay.pod`` names the relay; ``relay.instance`` is random per process start and
  ``started_at`` is when that process started; ``seq`` starts at 1 per instance and grows
  by one per report.
- ``state`` is authoritative: gauges are current values, ``*_total`` are cumulative since
  the instance started. Any single report restores that relay's whole state, so a lost,
  repeated or reordered report never corrupts a total.
- ``events`` carry what a snapshot cannot: allocation lifecycles (durations, deletion
  reasons ``refresh_zero``, ``expired``, ``drained``, ``error``; bytes per allocation). At
  most :data:`MAX_EVENTS` per report.
- Sides: ``client`` is traffic on the TURN listeners, ``peer`` on relayed sockets.
  Transports: ``udp``, ``tcp``, ``tls``, ``dtls``; a name the scaler does not know is
  counted under that name (``[a-z][a-z0-9-]{0,15}``, at most 8 per map), never a reason to
  reject the report.
- A relay reports within 50 ms of any allocation change and at least every 5 s.
- ``state.users`` (optional, additive: scalers of the first release skip it) holds the
  relay's allocations per user: ``{user_digest(quota key): count}`` for users with at
  least one allocation, at most :data:`MAX_REPORTED_USERS` of them (the users with the most
  allocations on that relay; with more users the rest are left out, so a scaler's fleet
  sum is a lower bound). The quota key is the relay's own (``static:NAME``,
  ``rest:USERID``, ``rest:`` for every anonymous REST credential); :func:`user_digest`
  sends it as a fixed-size SHA-256 digest, never in the clear. The field is carried as
  raw JSON (:class:`msgspec.Raw`, at most :data:`MAX_USERS_BYTES`): ingest only bounds
  its size, and the scaler validates it (:func:`users_of`) when it sums, so a report's
  users cost ingest next to nothing; a relay whose users do not validate counts none.
- The scaler answers 202 (accepted, or ``late``: an older seq not seen before, whose events
  count), 200 for a duplicate or older ``seq`` or an older instance than the one it holds
  (ignored, idempotent), 400 with ``{"error": ...}`` naming the bad field, 401 for a bad
  token, 413 for a body over the limit, 415 for the wrong content type, 503 for a new relay
  beyond ``--max-relays``.
- Answer bodies are JSON objects; a relay ignores keys it does not know. With
  ``--fleet-user-quota`` a 202 body also carries the fleet quota answer, version
  :data:`OVER_QUOTA_VERSION`: ``{"result": "accepted", "seq": 17, "over_quota":
  {"version": 1, "users": ["<digest>", ...], "truncated": false}}``, the users (digests)
  whose allocations across the fleet are at or over the quota, at most
  :data:`MAX_OVER_QUOTA` of them (``truncated`` says more were over). No ``over_quota``
  key, an unknown ``version`` or a body that does not decode means "nobody is over" to
  the relay: the quota fails open.

One decode validates the whole report in a single pass: types, bounds, label syntax
(Kubernetes object names) and the event union; of ``state.users`` only the size (its
content is read by :func:`users_of` when the scaler sums). Anything else is a
:class:`ReportError` naming the offending field, and the report is rejected whole. The
relay's pusher encodes the same types, so both ends share one definition.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Annotated, Final, Literal

import msgspec

from scaler.common.names import DNS_LABEL, DNS_SUBDOMAIN, LABEL_MAX, SUBDOMAIN_MAX

VERSION: Final = 1
MAX_BODY_BYTES: Final = 1 << 20
MAX_EVENTS: Final = 5000
# Totals stay exact in a float64 sample up to 2**53.
MAX_COUNT: Final = 1 << 53
MAX_ALLOCATIONS: Final = 1_000_000
# Plausible wall-clock seconds: 2000-01-01 .. 2100-01-01.
EARLIEST_TIME: Final = 946_684_800.0
LATEST_TIME: Final = 4_102_444_800.0
MAX_DURATION: Final = 10 * 365 * 86400.0
#: Users with allocations one report lists at most (``state.users``).
MAX_REPORTED_USERS: Final = 1000
#: Bytes of ``state.users`` at most: the largest valid one with room for whitespace.
MAX_USERS_BYTES: Final = 64 * 1024
#: Version of the ``over_quota`` answer; users over quota one answer lists at most.
OVER_QUOTA_VERSION: Final = 1
MAX_OVER_QUOTA: Final = 1000
#: Bytes of an answer body a relay reads at most (the largest ``over_quota`` fits).
MAX_ANSWER_BYTES: Final = 64 * 1024

# RFC 1123 label (namespaces) and subdomain (pods, gateways), as Kubernetes validates them.
Namespace = Annotated[str, msgspec.Meta(pattern=DNS_LABEL, max_length=LABEL_MAX)]
ObjectName = Annotated[str, msgspec.Meta(pattern=DNS_SUBDOMAIN, max_length=SUBDOMAIN_MAX)]
InstanceId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
AllocationId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Timestamp = Annotated[float, msgspec.Meta(ge=EARLIEST_TIME, le=LATEST_TIME)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
Gauge = Annotated[int, msgspec.Meta(ge=0, le=MAX_ALLOCATIONS)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DURATION)]
#: :func:`user_digest` of a quota key: 64 bits in lowercase hex. Decoded as an opaque
#: string of exactly 16 characters (a pattern check would cost ingest 5x as much).
DIGEST_LENGTH: Final = 16
UserDigest = Annotated[str, msgspec.Meta(min_length=DIGEST_LENGTH, max_length=DIGEST_LENGTH)]

#: A transport name. Relays report ``udp``, ``tcp``, ``tls`` and ``dtls`` today; a name this
#: scaler does not know (a newer relay's) is counted under that name, never a reason to
#: reject the report: new map keys are additive to version 1. Names become label values,
#: so their syntax and their number per map (:data:`MAX_TRANSPORTS`) are bounded.
Transport = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{0,15}$")]
MAX_TRANSPORTS: Final = 8
Side = Literal["client", "peer"]
DeleteReason = Literal["refresh_zero", "expired", "drained", "error"]

TRANSPORTS: Final[tuple[str, ...]] = ("udp", "tcp", "tls", "dtls")
SIDES: Final[tuple[Side, ...]] = ("client", "peer")
DELETE_REASONS: Final[tuple[DeleteReason, ...]] = ("refresh_zero", "expired", "drained", "error")


class RelayIdentity(msgspec.Struct, frozen=True):
    pod: ObjectName
    namespace: Namespace
    gateway: ObjectName
    instance: InstanceId
    started_at: Timestamp


#: A reason an Allocate got 486 (``state.refused_total``): a label value, so bounded.
RefusalReason = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z_]{0,31}$")]
MAX_REFUSAL_REASONS: Final = 8
#: ``state.users`` of a relay with no allocations (and of a report without the field).
NO_USERS: Final = msgspec.Raw(b"{}")
Users = Annotated[dict[UserDigest, Gauge], msgspec.Meta(max_length=MAX_REPORTED_USERS)]


class RelayState(msgspec.Struct, frozen=True, omit_defaults=True):
    """Authoritative snapshot: gauges are current, ``*_total`` cumulative since start.

    ``users`` and ``refused_total`` are additive to version 1 and left out of the JSON
    while empty, so a relay without users or refusals encodes exactly what the first
    release did. ``users`` is the raw JSON object (digest -> allocations):
    :func:`users_field` builds it, :func:`users_of` reads it. ``refused_total`` counts
    Allocates refused with 486 since the instance started, by reason (``user_quota``,
    ``total_quota``, ``fleet_user_quota``; a scaler takes reasons it does not know too)."""

    allocations: Annotated[dict[Transport, Gauge], msgspec.Meta(max_length=MAX_TRANSPORTS)]
    connections_total: Annotated[dict[Transport, Count], msgspec.Meta(max_length=MAX_TRANSPORTS)]
    bytes_received_total: dict[Side, Count]
    bytes_sent_total: dict[Side, Count]
    users: msgspec.Raw = NO_USERS
    refused_total: Annotated[
        dict[RefusalReason, Count], msgspec.Meta(max_length=MAX_REFUSAL_REASONS)
    ] = {}


class AllocationCreated(msgspec.Struct, frozen=True, tag_field="type", tag="allocation_created"):
    at: Timestamp
    allocation: AllocationId
    transport: Transport


class AllocationDeleted(msgspec.Struct, frozen=True, tag_field="type", tag="allocation_deleted"):
    at: Timestamp
    allocation: AllocationId
    transport: Transport
    reason: DeleteReason
    duration: Seconds
    bytes_received: Count = 0
    bytes_sent: Count = 0


Event = AllocationCreated | AllocationDeleted


class Report(msgspec.Struct, frozen=True):
    version: int
    relay: RelayIdentity
    seq: Seq
    sent_at: Timestamp
    state: RelayState
    draining: bool = False
    events: Annotated[list[Event], msgspec.Meta(max_length=MAX_EVENTS)] = []


class OverQuota(msgspec.Struct, frozen=True):
    """The fleet quota answer (in a 202 body under ``over_quota``): who is over."""

    version: int = OVER_QUOTA_VERSION
    users: Annotated[list[UserDigest], msgspec.Meta(max_length=MAX_OVER_QUOTA)] = []
    truncated: bool = False


class ReportAnswer(msgspec.Struct, frozen=True):
    """What a relay reads from an answer body; every other key is skipped."""

    over_quota: OverQuota | None = None


class ReportError(ValueError):
    """A report that breaks the contract; ``str()`` names the offending field."""


_decoder: Final = msgspec.json.Decoder(Report)
_answer_decoder: Final = msgspec.json.Decoder(ReportAnswer)
_users_decoder: Final = msgspec.json.Decoder(Users)
_encoder: Final = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$(.*)`$")
_KEY_PATH = re.compile(r" - at `key` in `\$(.*)`$")


def decode(body: bytes) -> Report:
    """Decode and validate one report (RFC 8259 JSON), or raise :class:`ReportError`."""
    try:
        report = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ReportError(_readable(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ReportError(f"malformed JSON: {exc}") from None
    except RecursionError:
        # Unknown fields are skipped, but msgspec still descends into them.
        raise ReportError("malformed JSON: nested too deeply") from None
    if report.version != VERSION:
        raise ReportError(
            f"unsupported version {report.version} at `version` (this scaler speaks 1)"
        )
    if len(report.state.users) > MAX_USERS_BYTES:
        raise ReportError(
            f"{len(report.state.users)} bytes at `state.users`, over the {MAX_USERS_BYTES}-byte "
            "limit"
        )
    return report


def users_field(users: Mapping[str, int]) -> msgspec.Raw:
    """``state.users`` for ``users`` (digest -> allocations), as a relay sends it."""
    return msgspec.Raw(_encoder.encode(users)) if users else NO_USERS


def users_of(raw: msgspec.Raw) -> dict[str, int]:
    """Validate and read ``state.users``; :class:`ReportError` names what is wrong."""
    if raw == NO_USERS:
        return {}
    try:
        return _users_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ReportError(_readable(str(exc), "state.users")) from None
    except msgspec.DecodeError as exc:
        raise ReportError(f"malformed JSON at `state.users`: {exc}") from None


def encode(report: Report) -> bytes:
    return _encoder.encode(report)


def encode_answer(body: Mapping[str, object]) -> bytes:
    """An answer body as JSON, with the contract's codec: the fleet quota's ``over_quota``
    list rides on every answer, and msgspec writes it about 8x faster than ``json.dumps``."""
    return _encoder.encode(body)


def to_builtins(answer: OverQuota) -> dict[str, object]:
    """An answer part as plain JSON values (for an answer body)."""
    value: dict[str, object] = msgspec.to_builtins(answer)
    return value


_DIGEST_DOMAIN: Final = b"turnscale fleet user quota v1\x00"


@functools.lru_cache(maxsize=16384)  # a relay hashes its users at every report
def user_digest(quota_key: str) -> str:
    """What a report and an answer say for a quota key: the first 64 bits of
    SHA-256(domain, key), hex.

    Fixed size, so reports stay bounded whatever a username's length; the same on every
    relay, so the scaler can sum across them; no name in the clear in reports, answers,
    the scaler's memory or logs. Not secrecy against the scaler itself: a key someone can
    guess can be confirmed (a key only relays shared would need a secret the fleet does
    not have). 64 bits: two of a million users share a budget with odds of about 3e-8,
    and taking a given user's budget needs a second preimage (2^64 tries).
    """
    data = _DIGEST_DOMAIN + quota_key.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:DIGEST_LENGTH]


def over_quota_from(body: bytes) -> OverQuota | None:
    """The fleet quota answer of an answer body; None when there is none, its version is
    not :data:`OVER_QUOTA_VERSION`, or the body does not decode (the quota fails open)."""
    try:
        answer = _answer_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    quota = answer.over_quota
    if quota is None or quota.version != OVER_QUOTA_VERSION:
        return None
    return quota


def _readable(message: str, root: str = "") -> str:
    # msgspec says "... - at `$.relay.pod`"; name the field the way the contract does.
    def path(match: re.Match[str]) -> str:
        return ".".join(part for part in (root, match.group(1).lstrip(".")) if part) or "report"

    message = _KEY_PATH.sub(lambda m: f" at a key of `{path(m)}`", message)
    if not _PATH.search(message) and root and " at a key of " not in message:
        return f"{message} at `{root}`"
    return _PATH.sub(lambda m: f" at `{path(m)}`", message)
