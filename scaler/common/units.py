"""Bandwidth figures as operators write them: ``200Mbit``, ``1Gbit``, ``25MB``, ``512KiB/s``.

A bandwidth is a rate, always per second (a trailing ``/s`` or ``ps`` may say so). The
unit says whether it counts bits or bytes, and must be spelled so nobody can misread it:

- bits: ``bit``, ``kbit``, ``Mbit``, ``Gbit``, ``Tbit`` (SI, powers of 1000, as network
  line rates are given: a "1 Gbit/s" NIC moves 125,000,000 bytes a second);
- bytes: ``B``, ``kB``, ``MB``, ``GB``, ``TB`` (SI) and ``KiB``, ``MiB``, ``GiB``, ``TiB``
  (IEC 80000-13, powers of 1024).

A bare ``b`` or ``Mb`` is refused (bit or byte?), and so is a number without a unit. The
prefix letter is case-insensitive (``mbit`` is megabit: no one relays millibits). The
result is whole bytes per second, at least 1 and at most :data:`MAX_BYTES_PER_SECOND`.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Final

#: 80 Tbit/s: far above any relay's NIC, far inside the int64 fields of KEDA's messages.
MAX_BYTES_PER_SECOND: Final = 10**13

_PREFIXES: Final = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY: Final = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SHAPE: Final = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<prefix>[kKmMgGtT]i?)?(?P<unit>bit|B|b)?"
    r"(?:/s|ps)?"
)
_EXAMPLES: Final = "like 200Mbit, 1Gbit, 25MB or 512KiB (per second)"


def parse_bandwidth(text: str) -> int:
    """Whole bytes per second of ``text``; :class:`ValueError` says what is wrong with it."""
    match = _SHAPE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a bandwidth {_EXAMPLES}")
    prefix = (match["prefix"] or "").lower()
    unit = match["unit"]
    if unit is None:
        raise ValueError(f"{text!r} has no unit: write bit or B, {_EXAMPLES}")
    if unit == "b":
        raise ValueError(f"{text!r}: 'b' could mean bits or bytes; write bit or B")
    if prefix.endswith("i") and unit == "bit":
        raise ValueError(f"{text!r}: binary prefixes (KiB, MiB, ...) are for bytes only")
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"{text!r} is not a bandwidth {_EXAMPLES}") from None
    scale = _BINARY[prefix] if prefix.endswith("i") else _PREFIXES[prefix]
    # Exact decimal arithmetic: 1.5Gbit is 187,500,000 B/s, not a float's neighbour of it.
    per_second = number * scale / (8 if unit == "bit" else 1)
    if per_second < 1:
        raise ValueError(f"{text!r} is less than 1 byte per second")
    value = math.ceil(per_second)
    if value > MAX_BYTES_PER_SECOND:
        raise ValueError(f"{text!r} is more than {MAX_BYTES_PER_SECOND // 10**12 * 8} Tbit/s")
    return value


def format_bandwidth(bytes_per_second: float) -> str:
    """``125000000`` -> ``1Gbit/s``: for log lines and messages, in bits as NICs are sold."""
    bits = bytes_per_second * 8
    for prefix, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if bits >= scale:
            return f"{bits / scale:.4g}{prefix}bit/s"
    return f"{bits:.4g}bit/s"
