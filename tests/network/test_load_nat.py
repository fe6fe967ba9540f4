"""``turnscale load`` from behind the NAT, and the scaler counting what it opens.

The load tool (aioice allocations) runs inside the client namespace as a user would run it,
against the relay's public address; its traffic goes to an echo peer on the media server.
The scaler runs in the relay namespace and the relay pushes to it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from tests import netns
from tests.network.stack import TARGET_PER_REPLICA, Stack, media_echo
from tests.relay.servers import PASSWORD, USER
from tests.waiting import eventually

TURNSCALE: Final = str(Path(sys.executable).parent / "turnscale")
ALLOCATIONS: Final = 40
#: Bound on the load run (its --duration is 8 s) and on the scaler's answers.
LOAD_TIMEOUT: Final = 40.0
RECEIVED = re.compile(r"packets sent (\d+) received (\d+)")


async def test_load_from_behind_the_nat_is_counted_by_the_scaler(
    relay_and_scaler: Stack,
) -> None:
    """/v1/scale goes from 0 allocations (2 replicas) to all of them (4 at 10 per replica)
    while the load runs, and back when it closes them; the echoes come back through the
    NAT."""
    stack = relay_and_scaler
    topology = stack.topology

    async def scale() -> dict[str, Any]:
        return await asyncio.to_thread(stack.scale)

    before = await scale()
    assert (before["allocations"], before["desiredReplicas"]) == (0, 2)
    async with media_echo(topology) as (peer, echo):
        host, port = stack.turn
        load = await asyncio.create_subprocess_exec(
            *topology.client.argv(
                TURNSCALE, "load", "--relay", f"udp://{host}:{port}",
                "--user", f"{USER}:{PASSWORD}", "--allocations", str(ALLOCATIONS),
                "--ramp", "1s", "--duration", "8s", "--peer", f"{peer[0]}:{peer[1]}",
                "--pps", "5",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            desired = ALLOCATIONS // TARGET_PER_REPLICA
            counted = {"allocations": ALLOCATIONS, "desiredReplicas": desired}

            async def all_counted() -> bool:
                answer = await scale()
                return all(answer[key] == value for key, value in counted.items())

            await eventually(all_counted, "the scaler counts every allocation", LOAD_TIMEOUT)
            async with asyncio.timeout(LOAD_TIMEOUT):
                _, stderr = await load.communicate()
        finally:
            if load.returncode is None:
                load.kill()
                await load.wait()
    output = stderr.decode()
    assert load.returncode == 0, output[-2000:]
    sent, received = map(int, RECEIVED.findall(output)[-1])
    assert sent > 0 and received > 0, output[-2000:]
    # Every packet reached the media server from the relay's cluster side.
    assert echo.received and {source[0] for _, source in echo.received} == {netns.RELAY_CLUSTER}

    async def released() -> bool:
        answer = await scale()
        return (answer["allocations"], answer["desiredReplicas"]) == (0, 2)

    await eventually(released, "the scaler sees the allocations closed", LOAD_TIMEOUT)
