"""aioice's TURN client (a real third-party implementation) against the relay, on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aioice import stun as aioice_stun
from aioice.turn import create_turn_endpoint

from relay.core.auth import rest_credentials
from tests.relay.servers import PASSWORD, SECRET, USER, address, relay_config, running
from tests.relay.turn_client import echo_peer

TRANSPORTS = ["udp", "tcp"]


class Receiver(asyncio.DatagramProtocol):
    """The application protocol on top of the TURN transport: collects what comes back."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_aioice_allocates_and_reaches_an_echo_peer(transport: str) -> None:
    async with running(relay_config()) as server, echo_peer() as (peer, protocol):
        turn_transport, receiver = await asyncio.wait_for(
            create_turn_endpoint(
                Receiver,
                server_addr=address(server, transport),
                username=USER,
                password=PASSWORD,
                transport=transport,
            ),
            10,
        )
        try:
            relayed = turn_transport.get_extra_info("sockname")
            assert relayed[0] == "127.0.0.1"
            for index in range(3):
                payload = f"echo {index}".encode()
                turn_transport.sendto(payload, peer)
                data, source = await asyncio.wait_for(receiver.queue.get(), 5)
                assert (data, tuple(source)) == (payload, peer)
            assert protocol.received[0][1] == tuple(relayed)
            assert server.stats.allocations[transport] == 1
        finally:
            turn_transport.close()
        # aioice deletes its allocation (Refresh with LIFETIME 0) when closed.
        for _ in range(250):
            if not len(server.table):
                break
            await asyncio.sleep(0.02)
        assert len(server.table) == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_aioice_wrong_password_gets_401(transport: str) -> None:
    async with running(relay_config()) as server:
        with pytest.raises(aioice_stun.TransactionFailed) as error:
            await asyncio.wait_for(
                create_turn_endpoint(
                    Receiver,
                    server_addr=address(server, transport),
                    username=USER,
                    password="not the password",
                    transport=transport,
                ),
                10,
            )
        assert error.value.response.attributes["ERROR-CODE"][0] == 401
        assert len(server.table) == 0


async def test_aioice_rest_credentials_work_and_expired_ones_fail() -> None:
    async with running(relay_config()) as server, echo_peer() as (peer, _):
        username, password = rest_credentials(SECRET, "web-client", time.time(), ttl=300)
        turn_transport, receiver = await asyncio.wait_for(
            create_turn_endpoint(
                Receiver, address(server, "udp"), username=username, password=password
            ),
            10,
        )
        try:
            turn_transport.sendto(b"rest", peer)
            assert (await asyncio.wait_for(receiver.queue.get(), 5))[0] == b"rest"
        finally:
            turn_transport.close()
        expired_user, expired_password = rest_credentials(
            SECRET, "web-client", time.time() - 600, ttl=300
        )
        with pytest.raises(aioice_stun.TransactionFailed) as error:
            await asyncio.wait_for(
                create_turn_endpoint(
                    Receiver,
                    address(server, "udp"),
                    username=expired_user,
                    password=expired_password,
                ),
                10,
            )
        assert error.value.response.attributes["ERROR-CODE"][0] == 401
