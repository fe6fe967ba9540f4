"""A bounded hostile load against a real relay process while a legitimate call goes on.

Hostile side, all on loopback and bounded in count and time: 1000 TCP connections that
each declare a 64 KiB frame and send a part of it (before the limits each held 66 KB for
the 60 s idle timeout), 300 TCP connections that send nothing, and one allocation that
floods CreatePermission with 16 peers per request far past the per-allocation cap.
Legitimate side: an aioice allocation echoing through the relay all along. The relay's RSS
growth and the legitimate round trips are printed, and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import struct
import time
from pathlib import Path

from tests.e2e.clients import Clients
from tests.relay.servers import PASSWORD, USER, RelayProcess, relay_process
from tests.relay.turn_client import TurnClient, TurnError, echo_peer

HOSTILE_FRAMES = 1000
SILENT = 300
FLOOD_REQUESTS = 40
# A relay that held what strangers send would grow by tens of MB here (66 KB each).
MAX_RSS_GROWTH = 20 * 1024 * 1024


def peer_address(n: int) -> tuple[str, int]:
    """Distinct peer IPs (permissions are per IP) in the benchmarking range 198.18.0.0/15."""
    return (f"198.18.{n // 250}.{1 + n % 250}", 5000)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def hostile_connection(
    address: tuple[str, int], payload: bytes
) -> asyncio.StreamWriter | None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    except (OSError, TimeoutError):
        return None  # refused at accept: the per-IP cap
    if payload:
        writer.write(payload)
        with contextlib.suppress(OSError):
            await writer.drain()
    return writer


async def round_trips(clients: Clients, peer: tuple[str, int], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await clients.echo(peer, rounds=1)
        times.append((time.perf_counter() - start) * 1000)
    return times


async def test_hostile_connections_and_permission_floods_leave_a_call_untouched() -> None:
    with relay_process() as relay:
        await _scenario(relay)


async def _scenario(relay: RelayProcess) -> None:
    pid = relay.process.pid
    async with echo_peer() as (peer, _):
        clients = Clients(relay.udp, relay.tcp)
        await clients.allocate(1)
        baseline = await round_trips(clients, peer, 20)
        before = rss(pid)

        # A STUN header declaring a 65532-byte body, then 32 KiB of it.
        partial = struct.pack("!HHI12s", 0x0001, 65532, 0x2112A442, b"x" * 12) + b"\0" * 32768
        writers = await asyncio.gather(
            *(hostile_connection(relay.tcp, partial) for _ in range(HOSTILE_FRAMES)),
            *(hostile_connection(relay.tcp, b"") for _ in range(SILENT)),
        )
        flood_codes: dict[int, int] = {}
        async with TurnClient(relay.udp, USER, PASSWORD) as flooder:
            await flooder.allocate()
            during = []
            for index in range(FLOOD_REQUESTS):
                peers = tuple(peer_address(index * 16 + i) for i in range(16))
                try:
                    await flooder.create_permission(*peers)
                    flood_codes[200] = flood_codes.get(200, 0) + 1
                except TurnError as error:
                    flood_codes[error.code] = flood_codes.get(error.code, 0) + 1
                if index % 4 == 0:
                    during += await round_trips(clients, peer, 2)
        during += await round_trips(clients, peer, 10)
        peak = rss(pid)
        for writer in writers:
            if writer is not None:
                writer.close()
        await clients.close()

    growth = peak - before
    print(
        f"\nhostile load: RSS {before / 1e6:.1f} MB -> {peak / 1e6:.1f} MB "
        f"(+{growth / 1e6:.2f} MB for {HOSTILE_FRAMES} partial frames and {SILENT} silent "
        f"connections); legitimate RTT p50 {statistics.median(baseline):.2f} ms before, "
        f"{statistics.median(during):.2f} ms during (max {max(during):.2f} ms); "
        f"permission flood answers {flood_codes}"
    )
    assert growth < MAX_RSS_GROWTH
    # The flood hits the per-allocation cap (256 permissions = 16 requests of 16): 508.
    assert flood_codes.get(508, 0) > 0 and flood_codes.get(200, 0) <= 16
    assert len(during) >= 20  # every echo came back (a lost one fails inside echo)
