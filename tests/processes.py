"""turnscale processes under test, read through their JSON log lines.

A thread reads stderr all along (so the process never blocks on a full pipe) and keeps
the parsed lines; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

#: How long a process may take to start, log something or stop.
PROCESS_TIMEOUT = 20.0


class LoggedProcess:
    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.process = subprocess.Popen(
            list(argv),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                entry: dict[str, Any] = json.loads(line)
            except ValueError:
                entry = {"event": "unparsed", "line": line}
            with self._changed:
                self.lines.append(entry)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def events(self, event: str) -> list[dict[str, Any]]:
        with self._changed:
            return [entry for entry in self.lines if entry.get("event") == event]

    def wait_for(self, event: str, timeout: float = PROCESS_TIMEOUT) -> dict[str, Any]:
        """The first log line with ``event``, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for entry in self.lines:
                    if entry.get("event") == event:
                        return entry
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(f"{self.name} never logged {event!r}: {self.lines[-5:]}")
                self._changed.wait(min(remaining, 0.5))

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        """Wait for the process to exit (and its log to be read); its exit status."""
        status = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return status

    def kill(self) -> None:
        """SIGKILL, and wait for the exit and the last log lines."""
        if self.process.poll() is None:
            self.process.kill()
        self.wait()
