"""The one log line of the packet path: a bug in request handling, rate-limited."""

from __future__ import annotations

import time

from scaler.common import logs

__all__ = ["report_bug"]

log = logs.get("relay")

_last_bug_report = 0.0


def report_bug(where: str) -> None:
    """Log an unexpected exception from request handling, at most once a second (a packet
    that triggers a bug must not turn into a log flood); the packet is dropped."""
    global _last_bug_report  # noqa: PLW0603 - one process-wide rate limit
    now = time.monotonic()
    if now - _last_bug_report >= 1.0:
        _last_bug_report = now
        log.exception("request handling failed; packet dropped", where=where)
