"""TLS terminated in compiled code in front of ``turnscale relay``: the row beside the relay's
own TLS in :mod:`tests.bench.tls_bench`'s new-connection rounds.

HAProxy (Debian's), one thread, pinned to the server core with the relay, terminates TLS
with the same certificate and forwards each connection's plaintext to the relay's
``tcp://`` listener (``mode tcp``, no PROXY header: the relay then sees HAProxy as the
client, which is fine for counting CPU). The two processes' CPU is summed. It answers
whether a compiled TLS front end would close the relay's handshake gap to coturn.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.bench.common import start_pinned, stop
from tests.net import free_port
from tests.relay.tls_helpers import Leaf

__all__ = ["haproxy_version", "start_frontend"]

_VERSION = re.compile(rb"HAProxy version (\d+\.\d+(?:\.\d+)?)")


def haproxy_version() -> str:
    """The installed HAProxy's version (``2.6.12``), or ``?``."""
    binary = shutil.which("haproxy")
    if binary is None:
        return "?"
    result = subprocess.run([binary, "-v"], capture_output=True, check=False, timeout=10)
    found = _VERSION.search(result.stdout)
    return found.group(1).decode() if found else "?"


def start_frontend(
    directory: Path, leaf: Leaf, backend_port: int
) -> tuple[subprocess.Popen[bytes], int]:
    """HAProxy terminating TLS 1.2 and 1.3 with ``leaf`` on a free loopback port and
    forwarding to ``127.0.0.1:backend_port``; returns the process and its port once it
    accepts connections."""
    binary = shutil.which("haproxy")
    assert binary is not None
    pem = directory / "frontend.pem"  # HAProxy takes the chain and the key in one file
    pem.write_bytes(leaf.cert.read_bytes() + leaf.key.read_bytes())
    port = free_port()
    config = directory / "haproxy.cfg"
    config.write_text(
        "\n".join(
            [
                "global",
                "    nbthread 1",
                "    maxconn 4096",
                "defaults",
                "    mode tcp",
                "    timeout connect 5s",
                "    timeout client 30s",
                "    timeout server 30s",
                "frontend turns",
                f"    bind 127.0.0.1:{port} ssl crt {pem} ssl-min-ver TLSv1.2",
                "    default_backend relay",
                "backend relay",
                f"    server relay 127.0.0.1:{backend_port}",
                "",
            ]
        )
    )
    check = subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, check=False, timeout=10
    )
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused its configuration: {check.stderr[-500:]!r}")
    process = start_pinned(
        [binary, "-f", str(config), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(port, process)
    except BaseException:
        stop(process)
        raise
    return process, port


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"haproxy did not listen on port {port} within 10 s")
