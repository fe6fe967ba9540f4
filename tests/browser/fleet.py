"""The fleets the browser tests call through, as real processes on loopback (port 0).

:class:`EmbeddedRun` is ``turnscale run`` as ``make run`` users start it. :func:`gateway_auth`
is the in-cluster shape: a ``turnscale auth`` process reading Gateway API files whose
listeners are those of a ``python -m relay`` process with the same (or, to test refusals,
another) TURN REST secret.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.gateway.objects import ephemeral_config, gateway, write_yaml
from tests.processes import PROCESS_TIMEOUT, LoggedProcess

TURNSCALE = str(Path(sys.executable).parent / "turnscale")
ANY_PORT = "127.0.0.1:0"
#: The secret the relay processes accept REST credentials of.
REST_SECRET = "browser-tests-shared-secret"


class EmbeddedRun:
    """``turnscale run`` on loopback ports chosen by the kernel; ``addresses`` is its JSON
    line (``http``, ``grpc``, ``turn``, ``tcp``, ``tls``, ``auth``, ``tester``, ...)."""

    def __init__(self, *flags: str) -> None:
        self.process = subprocess.Popen(
            [
                *(TURNSCALE, "run", "--http", ANY_PORT, "--grpc", ANY_PORT, "--turn", ANY_PORT),
                *("--turns", ANY_PORT, "--health", ANY_PORT, "--peer", ANY_PORT),
                *("--auth", ANY_PORT, *flags),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(lines,), daemon=True)
        self._reader.start()
        self.addresses: dict[str, str] = {}
        for _ in range(200):  # the instructions come first: bounded in lines and time
            line = lines.get(timeout=PROCESS_TIMEOUT)
            if line.startswith("{") and json.loads(line)["event"] == "turnscale running":
                self.addresses = json.loads(line)
                break
        if not self.addresses:
            self.stop()
            raise AssertionError("turnscale run did not say where it runs")

    def _read(self, lines: queue.Queue[str]) -> None:
        for line in self.process.stdout or ():
            lines.put(line)

    @property
    def tester(self) -> str:
        return self.addresses["tester"]

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=PROCESS_TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=PROCESS_TIMEOUT)
            self._reader.join(timeout=5)


@contextlib.contextmanager
def embedded_run(*flags: str) -> Iterator[EmbeddedRun]:
    run = EmbeddedRun(*flags)
    try:
        yield run
    finally:
        assert run.stop() == 0


class AuthProcess(LoggedProcess):
    """``turnscale auth --config FILE`` on loopback; ``tester`` is the page's URL it logs."""

    def __init__(self, config: Path, *flags: str) -> None:
        super().__init__(
            "auth",
            [
                *(TURNSCALE, "auth", "--config", str(config), "--public-address", "127.0.0.1"),
                *("--http", ANY_PORT, *flags),
            ],
        )
        self.serving: dict[str, Any] = self.wait_for("ice endpoint serving")
        self.tester: str = self.serving["tester"].partition("#")[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.wait()
        finally:
            self.kill()


def gateway_files(
    directory: Path, listeners: Sequence[tuple[str, int]], secret: str = REST_SECRET
) -> Path:
    """A Gateway with ``(transport, port)`` listeners and an ephemeral GatewayConfig."""
    protocols = {"udp": "TURN-UDP", "tcp": "TURN-TCP"}
    documents = [
        gateway(
            *(
                {"name": f"{transport}-listener", "port": port, "protocol": protocols[transport]}
                for transport, port in listeners
            )
        ),
        ephemeral_config(secret, authLifetime=3600),
    ]
    return write_yaml(directory / "gateway.yaml", documents)


@contextlib.contextmanager
def gateway_auth(
    directory: Path,
    listeners: Sequence[tuple[str, int]],
    *flags: str,
    secret: str = REST_SECRET,
) -> Iterator[AuthProcess]:
    """``turnscale auth`` minting with ``secret`` for a Gateway with ``listeners``."""
    auth = AuthProcess(gateway_files(directory, listeners, secret), *flags)
    try:
        yield auth
    finally:
        auth.stop()
