"""Exponential backoff with equal jitter, the one rule every retry loop here follows.

Attempt ``n`` (counting failures from 1) waits between half and all of
``min(initial * factor ** (n - 1), maximum)``: half fixed, so retries never bunch at zero,
half random, so many clients that failed together do not retry in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# Past this many doublings every delay is at its maximum anyway; the cap keeps the
# exponent from overflowing a float after a very long outage.
_MAX_EXPONENT = 64


def delay(
    failures: int,
    *,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """The wait after ``failures`` failures in a row (1 for the first)."""
    exponent = min(max(failures - 1, 0), _MAX_EXPONENT)
    ceiling = min(initial * factor**exponent, maximum)
    return float(ceiling * (0.5 + 0.5 * rng()))


class Backoff:
    """Counts failures in a row; :meth:`next` is the wait after one more."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        factor: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial, self.maximum, self.factor, self.rng = initial, maximum, factor, rng
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return delay(
            self.failures,
            initial=self.initial,
            maximum=self.maximum,
            factor=self.factor,
            rng=self.rng,
        )

    def reset(self) -> None:
        self.failures = 0
