"""A running relay's listeners change one at a time (live Gateway changes), and a relay
waiting for its configuration is not ready."""

from __future__ import annotations

import aiohttp

from relay.config import Listen
from scaler.common.flags import HostPort
from tests.relay.servers import PASSWORD, USER, address, relay_config, running
from tests.relay.turn_client import TurnClient


async def test_only_the_changed_listener_restarts() -> None:
    async with running(relay_config()) as server:
        udp, tcp = server.listeners
        async with TurnClient(address(server, "udp"), USER, PASSWORD) as over_udp:
            await over_udp.allocate()
            async with TurnClient(address(server, "tcp"), USER, PASSWORD, transport="tcp") as t:
                await t.allocate()
                extra = Listen("udp", HostPort("127.0.0.2", 0))
                await server.set_listeners([*server.config.listen, extra])
                assert server.listeners[:2] == [udp, tcp] and len(server.listeners) == 3
                assert len(server.table) == 2
                # The TCP listener goes: it stops accepting, its connection goes on.
                await server.set_listeners([server.config.listen[0], extra])
                assert [item.transport for item in server.listeners] == ["udp", "udp"]
                assert await t.refresh(600) == 600
                # The first UDP listener goes: its allocations go with it.
                await server.set_listeners([extra])
                assert server.listeners[0].transport == "udp" and len(server.listeners) == 1
                assert [a.transport for a in server.table] == ["tcp"]
                assert server.stats.snapshot().allocations["udp"] == 0
        async with TurnClient(address(server, "udp"), USER, PASSWORD) as again:
            await again.allocate()  # the new listener serves


async def test_a_relay_waiting_for_its_configuration_is_not_ready() -> None:
    async with running(relay_config()) as server:
        url = f"http://{server.health_address}/ready"
        async with aiohttp.ClientSession() as session:
            server.configured = False
            async with session.get(url) as response:
                assert response.status == 503
            server.configured = True
            async with session.get(url) as response:
                assert response.status == 200
