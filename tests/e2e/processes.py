"""Real scaler processes for the end-to-end tests (relays come from tests/relay/servers.py).

:class:`ScalerProcess` runs ``python -m scaler`` on loopback and learns its addresses from
its JSON ``scaler serving`` log line. A thread reads stderr all along, so the scaler never
blocks on a full pipe; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator

from tests.processes import PROCESS_TIMEOUT, LoggedProcess
from tests.relay.servers import RelayProcess

#: Scaler flags of the e2e tests: a relay silent 1 s is stale, 2 s expired.
FAST_EXPIRY = ("--stale-after", "1s", "--expire-after", "2s")


class ScalerProcess(LoggedProcess):
    """``python -m scaler --http HOST:PORT --grpc HOST:0 FLAGS...``, its log read as it comes.

    ``http`` may name a fixed port (a restarted scaler comes back where relays push); gRPC
    takes any free port, as clients here learn it from the log.
    """

    def __init__(self, *flags: str, http: str = "127.0.0.1:0", grpc: str | None = None) -> None:
        host = http.rpartition(":")[0]
        argv = [
            sys.executable,
            "-m",
            "scaler",
            *("--http", http, "--grpc", grpc or f"{host}:0"),
            *flags,
        ]
        super().__init__("scaler", argv)
        serving = self.wait_for("scaler serving")
        #: ``host:port`` of the HTTP and the gRPC listener.
        self.http: str = serving["http"]
        self.grpc: str = serving["grpc"]
        self.base = f"http://{self.http}"

    def stop(self) -> None:
        """SIGTERM (an orderly stop), SIGKILL if that takes too long."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=PROCESS_TIMEOUT)
        self.kill()


@contextlib.contextmanager
def scaler_process(*flags: str, http: str = "127.0.0.1:0") -> Iterator[ScalerProcess]:
    scaler = ScalerProcess(*flags, http=http)
    try:
        yield scaler
    finally:
        scaler.stop()


def relay_flags(
    scaler: str | list[str], pod: str, *, namespace: str, gateway: str, interval: str = "0.5s"
) -> list[str]:
    """Flags that make a relay push to ``scaler`` (a base URL, or several) as ``pod``."""
    urls = [scaler] if isinstance(scaler, str) else scaler
    flags = [item for url in urls for item in ("--scaler", url)]
    flags += ["--pod", pod, "--namespace", namespace, "--gateway", gateway]
    return [*flags, "--report-interval", interval]


@contextlib.contextmanager
def pushing_relay(
    scaler: str | list[str],
    pod: str,
    *extra: str,
    namespace: str,
    gateway: str,
    interval: str = "0.5s",
) -> Iterator[RelayProcess]:
    """A ``python -m relay`` process pushing reports to ``scaler`` as ``pod``."""
    relay = RelayProcess(
        *relay_flags(scaler, pod, namespace=namespace, gateway=gateway, interval=interval),
        *extra,
    )
    try:
        yield relay
    finally:
        relay.stop()
