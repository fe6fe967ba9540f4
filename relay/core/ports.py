"""Which relayed-transport ports are free (``--relay-ports MIN-MAX``), sans-I/O.

The pool only knows the ports this process holds. A port another process holds is found out
when binding fails; the caller then tries another (a bounded number of times) and answers 508
(Insufficient Capacity) when it runs out. Ports are picked at random (RFC 8656 §7.2 and
RFC 6056 advise unpredictable relayed ports) by probing from a random start, so a full pool is
detected at once and a nearly full one costs one pass at most.
"""

from __future__ import annotations

import random

__all__ = ["DEFAULT_RANGE", "PortPool", "parse_port_range"]

DEFAULT_RANGE = (49152, 65535)


def parse_port_range(text: str) -> tuple[int, int]:
    """``MIN-MAX`` (inclusive, 1..65535, MIN <= MAX); ValueError otherwise."""
    low_text, dash, high_text = text.strip().partition("-")
    if not dash or not low_text.isdigit() or not high_text.isdigit():
        raise ValueError(f"{text!r} is not a port range like 49152-65535")
    low, high = int(low_text), int(high_text)
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"port range {low}-{high} must satisfy 1 <= MIN <= MAX <= 65535")
    return low, high


class PortPool:
    """Ports ``low..high`` (inclusive), each held at most once."""

    __slots__ = ("_held", "_rng", "high", "low")

    def __init__(self, low: int, high: int, rng: random.Random | None = None) -> None:
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"port range {low}-{high} is invalid")
        self.low = low
        self.high = high
        self._held: set[int] = set()
        self._rng = random.Random() if rng is None else rng

    @property
    def capacity(self) -> int:
        """How many ports the range has."""
        return self.high - self.low + 1

    def __len__(self) -> int:
        """How many ports are held."""
        return len(self._held)

    def __contains__(self, port: object) -> bool:
        return port in self._held

    def acquire(self, *, even: bool = False, avoid: frozenset[int] = frozenset()) -> int | None:
        """Hold and return a free port (an even one if asked), not in ``avoid``; None if none."""
        size = self.capacity
        if len(self._held) >= size:
            return None
        start = self._rng.randrange(size)
        held = self._held
        for offset in range(size):
            port = self.low + (start + offset) % size
            if port in held or port in avoid or (even and port & 1):
                continue
            held.add(port)
            return port
        return None

    def acquire_pair(self, *, avoid: frozenset[int] = frozenset()) -> int | None:
        """Hold an even port and the odd one after it (EVEN-PORT with the R bit, RFC 8656
        §7.2); return the even one, or None if no such pair is free."""
        size = self.capacity
        if len(self._held) + 2 > size:
            return None
        start = self._rng.randrange(size)
        held = self._held
        for offset in range(size):
            port = self.low + (start + offset) % size
            if port & 1 or port + 1 > self.high:
                continue
            if port in held or port + 1 in held or port in avoid or port + 1 in avoid:
                continue
            held.add(port)
            held.add(port + 1)
            return port
        return None

    def release(self, port: int) -> None:
        """Give a port back (unknown ports are ignored)."""
        self._held.discard(port)
