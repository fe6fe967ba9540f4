"""TCP connections without an allocation are held to what an Allocate needs (RFC 8656 §17).

Found by an attack round: before authenticating, a TCP client could announce a 64 KiB frame
and hold it partial forever, on as many connections as it liked.
"""

from __future__ import annotations

import asyncio

from relay.core.admission import TcpAdmission
from relay.net.tcp import PENDING_FRAME_TIMEOUT, PENDING_MAX_FRAME_SIZE
from relay.proto import stun
from relay.proto.stun import MessageBuilder, MessageClass
from tests.clock import FakeClock
from tests.relay.servers import PASSWORD, USER, address, relay_config, running, until
from tests.relay.turn_client import TurnClient, echo_peer


def stun_header(length: int) -> bytes:
    """The header of a Binding request announcing ``length`` bytes of attributes."""
    return MessageBuilder(stun.BINDING, MessageClass.REQUEST).encode()[:2] + (
        length.to_bytes(2, "big") + stun.MAGIC_COOKIE.to_bytes(4, "big") + b"T" * 12
    )


async def test_a_big_frame_before_the_allocation_closes_and_after_it_is_relayed() -> None:
    async with running(relay_config()) as server:
        reader, writer = await asyncio.open_connection(*address(server, "tcp"))
        writer.write(stun_header(PENDING_MAX_FRAME_SIZE))  # 20 + 2048 bytes: too big
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        async with (
            echo_peer() as (peer, _),
            TurnClient(address(server, "tcp"), USER, PASSWORD, transport="tcp") as c,
        ):
            await c.allocate()
            await c.create_permission(peer)
            big = b"m" * 8000  # over the pending cap, fine with an allocation
            c.send_indication(peer, big)
            assert await c.receive() == (peer, big)


async def test_a_partial_frame_is_closed_after_the_timeout() -> None:
    clock = FakeClock()
    async with running(relay_config(), clock=clock, sweep_interval=3600) as server:
        reader, writer = await asyncio.open_connection(*address(server, "tcp"))
        idle_reader, idle_writer = await asyncio.open_connection(*address(server, "tcp"))
        ok_reader, ok_writer = await asyncio.open_connection(*address(server, "tcp"))
        writer.write(stun_header(100) + b"\x00" * 10)
        ok_writer.write(MessageBuilder(stun.BINDING, MessageClass.REQUEST).encode())
        await until(lambda: len(server.connections) == 3)
        assert await ok_reader.read(20)  # answered: a complete frame
        await asyncio.sleep(0.1)
        clock.now += PENDING_FRAME_TIMEOUT - 1
        server.sweep()
        assert len(server.connections) == 3
        clock.now += 2
        server.sweep()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # never sent a frame
        await until(lambda: len(server.connections) == 1)  # the Binding one stays
        for w in (writer, idle_writer, ok_writer):
            w.close()


async def refused(tcp: tuple[str, int], source: str = "127.0.0.1") -> bool:
    reader, writer = await asyncio.open_connection(*tcp, local_addr=(source, 0))
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


async def test_pending_connections_are_capped_per_ip_and_in_total() -> None:
    config = relay_config(tcp_max_pending=4, tcp_max_pending_per_ip=3)
    async with running(config) as server:
        tcp = address(server, "tcp")
        admission = server.admission
        held = [await asyncio.open_connection(*tcp) for _ in range(2)]
        async with TurnClient(tcp, USER, PASSWORD, transport="tcp") as c:
            await until(lambda: admission.pending == 3)
            await c.allocate()  # an allocation frees its connection's place
            assert admission.pending == 2
            held.append(await asyncio.open_connection(*tcp))
            await until(lambda: admission.pending == 3)
            assert await refused(tcp)  # a 4th pending one from 127.0.0.1
            held.append(await asyncio.open_connection(*tcp, local_addr=("127.0.0.2", 0)))
            await until(lambda: admission.pending == 4)
            assert await refused(tcp, "127.0.0.2")  # the relay's total
            assert admission.refused == 2
            await c.refresh()  # the allocated connection is not affected
        for _, writer in held:
            writer.close()
        await until(lambda: admission.pending == 0)


def test_admission_counts() -> None:
    admission = TcpAdmission(max_pending=3, max_per_ip=2)
    assert admission.admit("a") and admission.admit("a") and not admission.admit("a")
    assert admission.admit("b") and not admission.admit("c")
    admission.release("a")
    assert admission.admit("c") and admission.pending == 3
    admission.release("zzz")  # unknown: ignored
    assert admission.pending == 3 and admission.refused == 2
    unlimited = TcpAdmission(0, 0)
    assert all(unlimited.admit("x") for _ in range(1000))
