"""Report wire contract, version 1 (relay -> scaler), as msgspec types.

One decode validates the whole report in a single pass: types, bounds, label
syntax (Kubernetes object names) and the event union. Anything else is a
:class:`ReportError` naming the offending field, and the report is rejected whole.
The relay's pusher encodes the same types, so both ends share one definition.
"""

from __future__ import annotations

import re
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

Transport = Literal["udp", "tcp", "tls", "dtls"]
Side = Literal["client", "peer"]
DeleteReason = Literal["refresh_zero", "expired", "drained", "error"]

TRANSPORTS: Final[tuple[Transport, ...]] = ("udp", "tcp", "tls", "dtls")
SIDES: Final[tuple[Side, ...]] = ("client", "peer")
DELETE_REASONS: Final[tuple[DeleteReason, ...]] = ("refresh_zero", "expired", "drained", "error")


class RelayIdentity(msgspec.Struct, frozen=True):
    pod: ObjectName
    namespace: Namespace
    gateway: ObjectName
    instance: InstanceId
    started_at: Timestamp


class RelayState(msgspec.Struct, frozen=True):
    """Authoritative snapshot: gauges are current, ``*_total`` cumulative since start."""

    allocations: dict[Transport, Gauge]
    connections_total: dict[Transport, Count]
    bytes_received_total: dict[Side, Count]
    bytes_sent_total: dict[Side, Count]


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


class ReportError(ValueError):
    """A report that breaks the contract; ``str()`` names the offending field."""


_decoder: Final = msgspec.json.Decoder(Report)
_encoder: Final = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$(.*)`$")


def decode(body: bytes) -> Report:
    """Decode and validate one report (RFC 8259 JSON), or raise :class:`ReportError`."""
    try:
        report = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ReportError(_readable(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ReportError(f"malformed JSON: {exc}") from None
    if report.version != VERSION:
        raise ReportError(
            f"unsupported version {report.version} at `version` (this scaler speaks 1)"
        )
    return report


def encode(report: Report) -> bytes:
    return _encoder.encode(report)


def _readable(message: str) -> str:
    # msgspec says "... - at `$.relay.pod`"; name the field the way the contract does.
    return _PATH.sub(lambda m: f" at `{m.group(1).lstrip('.') or 'report'}`", message)
