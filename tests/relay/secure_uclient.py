"""coturn's ``turnutils_uclient -S`` against a ``python -m relay`` process over TLS
(``-t -S``, TCP) or DTLS (``-S``, UDP), static and REST credentials and send indications,
through the relay to ``turnutils_peer``: the load both secure transports' tests share."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Literal

from tests.relay.servers import PASSWORD, USER, free_port_pair, relay_process
from tests.relay.test_coturn import LOAD, Outcome, collect_outcomes
from tests.relay.tls_helpers import Authority
from tests.tools import require_tool

REST_SECRET = "coturn-rest-secret"
# uclient's flags for each secure transport: -S alone is DTLS over UDP.
CLIENT_FLAGS: dict[str, tuple[str, ...]] = {"tls": ("-t", "-S"), "dtls": ("-S",)}


def variants(scheme: str) -> dict[str, tuple[str, ...]]:
    """The uclient runs, named ``"<scheme> static credentials"`` and so on."""
    return {
        f"{scheme} static credentials": ("-u", USER, "-w", PASSWORD),
        f"{scheme} rest credentials": ("-u", "web-client", "-W", REST_SECRET),
        f"{scheme} send indications": ("-s", "-u", USER, "-w", PASSWORD),
    }


@contextlib.contextmanager
def uclient_runs(
    authority: Authority, scheme: Literal["tls", "dtls"]
) -> Iterator[dict[str, Outcome]]:
    """Every variant's outcome, plus ``"relay stopped"`` (the relay's stop event as text)
    and ``"event loop"`` (the loop the relay served on)."""
    uclient = require_tool("turnutils_uclient")
    peer_binary = require_tool("turnutils_peer")
    leaf = authority.leaf(f"coturn-{scheme}")
    peer_port = free_port_pair()
    peer = subprocess.Popen(
        [peer_binary, "-L", "127.0.0.1", "-p", str(peer_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    flags = ("--legacy-channels", "--auth-secret", REST_SECRET)
    listen = ("--listen", f"{scheme}://127.0.0.1:0", "--tls-cert", str(leaf.cert))
    try:
        with relay_process(*flags, *listen, "--tls-key", str(leaf.key)) as relay:
            served = next(i for i in relay.serving["listen"] if i.startswith(f"{scheme}://"))
            port = served.rpartition(":")[2]
            running_clients = {
                name: subprocess.Popen(
                    [
                        uclient,
                        *LOAD,
                        *CLIENT_FLAGS[scheme],
                        *credentials,
                        *("-e", "127.0.0.1", "-r", str(peer_port), "-p", port),
                        "127.0.0.1",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for name, credentials in variants(scheme).items()
            }
            results = collect_outcomes(running_clients)
            relay.process.terminate()
            if scheme == "dtls":
                # uclient leaves its DTLS allocations behind: a second signal ends the drain.
                relay.process.send_signal(2)
            relay.wait()
            stopped = relay.events("relay stopped")
            results["relay stopped"] = Outcome(0, repr(stopped[0] if stopped else {}))
            results["event loop"] = Outcome(0, str(relay.serving["event_loop"]))
            yield results
    finally:
        peer.terminate()
        peer.wait(timeout=10)
