"""Who may mint TURN credentials at ``GET /ice``, and how often: pure, clock passed in.

``turnscale auth`` holds the Gateway's shared secret and mints a credential per call, so
an unauthenticated endpoint hands working TURN credentials (or, in static mode, the static
password) to anyone who reaches it. Callers are the application backends: each holds a
bearer token from ``--caller-token-file`` (one per line; a Kubernetes Secret key) and
sends ``Authorization: Bearer <token>``. Each caller gets a token bucket of
``--mint-rate`` credentials per second with bursts up to ``--mint-burst``: a leaked token
can mint at that rate, not at the endpoint's speed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scaler.common.flags import ConfigError

#: Callers whose buckets are remembered; beyond it the least recently seen is forgotten
#: (it then starts with a full bucket, which a token holder gains nothing from).
MAX_TRACKED: Final = 10_000


def read_caller_tokens(path: Path, flag: str = "--caller-token-file") -> tuple[str, ...]:
    """Tokens, one per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag}: cannot read {str(path)!r}: {exc}") from None
    tokens = tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
    if not tokens:
        raise ConfigError(f"{flag}: {str(path)!r} holds no token")
    for token in tokens:
        if len(token) < 16 or any(ch.isspace() for ch in token):
            raise ConfigError(
                f"{flag}: every token must be at least 16 characters without white space"
            )
    return tokens


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float


class CallerGate:
    """Identifies a caller from its ``Authorization`` header and rate-limits its mints."""

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float],
    ) -> None:
        # Compared as digests, so a caller's identity in logs and buckets is no secret.
        self._callers = {
            hashlib.sha256(t.encode()).digest(): f"caller-{i}" for i, t in enumerate(tokens)
        }
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def identify(self, authorization: str | None) -> str | None:
        """The caller's name, or None for a missing or unknown token."""
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        try:
            digest = hashlib.sha256(credential.strip().encode()).digest()
        except UnicodeEncodeError:
            return None
        found = None
        for known, name in self._callers.items():  # every entry, in constant time each
            if hmac.compare_digest(known, digest):
                found = name
        return found

    def admit(self, caller: str) -> float:
        """0 when ``caller`` may mint now (and it is counted), else the seconds to wait."""
        now = self.clock()
        bucket = self._buckets.pop(caller, None) or _Bucket(float(self.burst), now)
        bucket.level = min(float(self.burst), bucket.level + (now - bucket.at) * self.rate)
        bucket.at = now
        self._buckets[caller] = bucket
        while len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)
        if bucket.level >= 1.0:
            bucket.level -= 1.0
            return 0.0
        return (1.0 - bucket.level) / self.rate
