"""Building wire-contract reports for tests, the way a relay's pusher would."""

from __future__ import annotations

from typing import Any

import msgspec

from scaler import wire

T0 = 1_763_701_000.0


def report(
    pod: str = "relay-a",
    *,
    seq: int = 1,
    instance: str = "inst1",
    started_at: float = T0,
    namespace: str = "stunner",
    gateway: str = "stunner-gateway",
    udp: int = 0,
    tcp: int = 0,
    connections: dict[str, int] | None = None,
    received: dict[str, int] | None = None,
    sent: dict[str, int] | None = None,
    draining: bool = False,
    events: list[wire.Event] | None = None,
) -> wire.Report:
    return wire.Report(
        version=1,
        relay=wire.RelayIdentity(pod, namespace, gateway, instance, started_at),
        seq=seq,
        sent_at=started_at + seq,
        draining=draining,
        state=wire.RelayState(
            allocations={"udp": udp, "tcp": tcp},
            connections_total=connections or {"udp": 0, "tcp": 0},
            bytes_received_total=received or {"client": 0, "peer": 0},  # type: ignore[arg-type]
            bytes_sent_total=sent or {"client": 0, "peer": 0},  # type: ignore[arg-type]
        ),
        events=events or [],
    )


def created(allocation: str = "a1", transport: wire.Transport = "udp") -> wire.AllocationCreated:
    return wire.AllocationCreated(at=T0 + 1, allocation=allocation, transport=transport)


def deleted(
    allocation: str = "a1",
    transport: wire.Transport = "udp",
    reason: wire.DeleteReason = "refresh_zero",
    duration: float = 42.0,
) -> wire.AllocationDeleted:
    return wire.AllocationDeleted(
        at=T0 + 2,
        allocation=allocation,
        transport=transport,
        reason=reason,
        duration=duration,
        bytes_received=10,
        bytes_sent=20,
    )


def as_json(value: wire.Report) -> bytes:
    return wire.encode(value)


def as_dict(value: wire.Report) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(wire.encode(value))
    return decoded
