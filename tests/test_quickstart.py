"""The quickstart as a user runs it: ``turnscale run``, then ``turnscale load`` against it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

TURNSCALE = str(Path(sys.executable).parent / "turnscale")
LOOPBACK_ANY_PORT = "127.0.0.1:0"


def scale(http: str) -> dict[str, Any]:
    url = f"http://{http}/v1/scale?gateway=stunner-gateway"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def test_load_of_450_moves_desired_replicas_from_2_to_5_and_back() -> None:
    run = subprocess.Popen(
        [TURNSCALE, "run", "--http", LOOPBACK_ANY_PORT, "--grpc", LOOPBACK_ANY_PORT,
         "--turn", LOOPBACK_ANY_PORT, "--health", LOOPBACK_ANY_PORT, "--peer", LOOPBACK_ANY_PORT,
         "--auth", LOOPBACK_ANY_PORT],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    load = None
    try:
        assert run.stdout is not None
        addresses: dict[str, str] = {}
        for _ in range(100):
            line = run.stdout.readline()
            if line.startswith("{") and json.loads(line)["event"] == "turnscale running":
                addresses = json.loads(line)
                break
        assert addresses, "turnscale run did not say where it runs"
        # The printed ICE tester serves its page, and /ice the relay's TURN URLs.
        assert addresses["tester"] == f"http://{addresses['auth']}/"
        with urllib.request.urlopen(addresses["tester"], timeout=5) as response:
            assert b"<title>turnscale ICE tester</title>" in response.read()
        with urllib.request.urlopen(f"{addresses['tester']}ice", timeout=5) as response:
            (server,) = json.load(response)["iceServers"]
        assert server["urls"] == [
            f"turn:{addresses['turn']}?transport=udp",
            f"turn:{addresses['tcp']}?transport=tcp",
        ]
        before = scale(addresses["http"])
        assert (before["allocations"], before["desiredReplicas"]) == (0, 2)

        load = subprocess.Popen(
            [TURNSCALE, "load", "--relay", f"udp://{addresses['turn']}",
             "--user", "demo:demo-password", "--allocations", "450", "--ramp", "2s",
             "--duration", "8s", "--peer", addresses["peer"], "--pps", "5"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        seen = []
        deadline = time.monotonic() + 30
        while load.poll() is None and time.monotonic() < deadline:
            seen.append(scale(addresses["http"]))
            time.sleep(0.1)
        assert load.wait(timeout=30) == 0, load.stderr.read() if load.stderr else ""
        assert max(answer["desiredReplicas"] for answer in seen) == 5
        assert max(answer["allocations"] for answer in seen) == 450
        final = None
        for _ in range(50):  # the last Refreshes (lifetime 0) reach the relay at once
            final = scale(addresses["http"])
            if final["allocations"] == 0:
                break
            time.sleep(0.1)
        assert final is not None
        assert (final["allocations"], final["desiredReplicas"]) == (0, 2)
    finally:
        for process in (load, run):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 0


def test_run_refuses_an_ice_endpoint_off_loopback_and_half_a_tls_pair() -> None:
    for flags, message in (
        (["--auth", "0.0.0.0:0"], "--auth 0.0.0.0:0: the ICE endpoint needs a loopback address"),
        (["--tls-cert", "relay.pem"], "--tls-cert and --tls-key go together"),
    ):
        refused = subprocess.run(
            [TURNSCALE, "run", *flags], capture_output=True, text=True, timeout=30
        )
        assert refused.returncode == 2, refused.stderr
        assert message in refused.stderr
