"""Admission of TCP connections that have no allocation yet ("pending"), per source IP and in
total: what an unauthenticated client can make the relay hold is bounded (RFC 8656 §17: a
TURN server is a target for resource exhaustion; RFC 8489 §6.2.2 leaves connection limits to
the server).

A connection is pending from accept until an allocation is attached to it, and again after
its allocation ends. :meth:`TcpAdmission.admit` refuses a new connection when its source IP or
the relay already holds the maximum of pending connections; one that becomes pending again is
always counted (it was admitted once). 0 means no limit.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_PER_IP",
    "TcpAdmission",
]

#: Pending TCP connections a relay holds at most (``--tcp-max-pending``).
DEFAULT_MAX_PENDING: Final = 4096
#: Pending TCP connections one source IP holds at most (``--tcp-max-pending-per-ip``): a
#: browser opens one per TURN URL and PeerConnection, and allocates within a round trip or
#: two, so even a large office behind one NAT stays far below it.
DEFAULT_MAX_PENDING_PER_IP: Final = 64


class TcpAdmission:
    """Counts pending TCP connections by source IP; see the module docstring."""

    __slots__ = ("_by_ip", "max_pending", "max_per_ip", "pending", "refused")

    def __init__(
        self,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_per_ip: int = DEFAULT_MAX_PENDING_PER_IP,
    ) -> None:
        if max_pending < 0 or max_per_ip < 0:
            raise ValueError("limits must not be negative (0 means none)")
        self.max_pending = max_pending
        self.max_per_ip = max_per_ip
        #: Pending connections now.
        self.pending = 0
        #: Connections refused at accept so far.
        self.refused = 0
        self._by_ip: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"TcpAdmission(pending={self.pending}, max_pending={self.max_pending}, "
            f"max_per_ip={self.max_per_ip}, refused={self.refused})"
        )

    def count(self, ip: str) -> int:
        """Pending connections from ``ip``."""
        return self._by_ip.get(ip, 0)

    def admit(self, ip: str) -> bool:
        """Count a new connection from ``ip`` as pending, or refuse it (False, not counted)."""
        if (self.max_pending and self.pending >= self.max_pending) or (
            self.max_per_ip and self._by_ip.get(ip, 0) >= self.max_per_ip
        ):
            self.refused += 1
            return False
        self.add(ip)
        return True

    def add(self, ip: str) -> None:
        """Count a connection from ``ip`` as pending, whatever the limits."""
        self.pending += 1
        self._by_ip[ip] = self._by_ip.get(ip, 0) + 1

    def release(self, ip: str) -> None:
        """A pending connection from ``ip`` got an allocation or closed."""
        held = self._by_ip.get(ip, 0)
        if held <= 0:
            return
        self.pending -= 1
        if held == 1:
            del self._by_ip[ip]
        else:
            self._by_ip[ip] = held - 1
