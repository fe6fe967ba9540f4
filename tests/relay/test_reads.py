"""Datagrams read per readable event (relay.net.reads): one at a time while events carry one
each, whole batches once datagrams queue up, and nothing left behind either way."""

from __future__ import annotations

import asyncio

import pytest

from relay.config import Listen, Transport
from relay.core.certs import TlsFiles
from relay.net.buffers import BATCH
from relay.net.reads import PROBE_EVERY, ReadBudget
from relay.net.relayed import RelaySocket
from relay.net.server import RelayServer
from relay.net.tls import ACCEPT_BATCH, TlsListener
from relay.proto import stun
from scaler.common.flags import HostPort
from tests.relay.servers import PASSWORD, USER, address, relay_config, running
from tests.relay.tls_helpers import Authority, DtlsTurnClient, Leaf, dtls_client_context
from tests.relay.turn_client import TurnClient, echo_peer

#: Messages sent back to back once the sockets are quiet: several batches' worth, small
#: enough that the loopback sockets' default buffers hold them all.
BURST = 2 * BATCH + 7
CHANNEL = 0x4001


def test_a_budget_starts_with_a_whole_batch() -> None:
    assert ReadBudget().limit == BATCH


def test_one_datagram_per_event_makes_it_read_one() -> None:
    budget = ReadBudget()
    budget.spent(1, emptied=True)
    assert budget.limit == 1
    budget = ReadBudget()
    budget.spent(0, emptied=True)  # a wake-up with nothing to read
    assert budget.limit == 1


def test_a_queue_keeps_whole_batches() -> None:
    budget = ReadBudget()
    budget.spent(2, emptied=True)
    assert budget.limit == BATCH
    budget.spent(BATCH, emptied=False)  # stopped at the limit: more may be queued
    assert budget.limit == BATCH


def test_a_quiet_socket_probes_every_few_events_and_goes_busy_on_a_queue() -> None:
    budget = ReadBudget()
    budget.spent(1, emptied=True)
    for _ in range(PROBE_EVERY - 1):
        budget.spent(1, emptied=False)  # read its one and stopped, without a failed read
        assert budget.limit == 1
    budget.spent(1, emptied=False)
    assert budget.limit == BATCH  # the probe
    budget.spent(1, emptied=True)  # still one at a time: quiet again
    assert budget.limit == 1
    for _ in range(PROBE_EVERY):
        budget.spent(1, emptied=False)
    budget.spent(5, emptied=True)  # the probe found a queue
    assert budget.limit == BATCH
    budget.spent(BATCH, emptied=False)
    assert budget.limit == BATCH


def test_a_budget_for_accepts_probes_with_its_own_batch() -> None:
    budget = ReadBudget(32)
    assert budget.limit == 32
    budget.spent(1, emptied=True)
    for _ in range(PROBE_EVERY):
        budget.spent(1, emptied=False)
    assert budget.limit == 32


async def test_tls_connections_come_one_by_one_then_many_at_once_and_all_are_served(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    config = relay_config(listen=(Listen("tls", HostPort("127.0.0.1", 0)),), tls=served[0])
    async with running(config) as server:
        host, port = address(server, "tls")
        context = authority.client_context()

        request = stun.MessageBuilder(stun.BINDING, stun.MessageClass.REQUEST).encode()

        async def binding() -> None:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host
            )
            try:
                writer.write(request)
                header = await reader.readexactly(20)
                answer = stun.parse(header + await reader.readexactly(header[3] | header[2] << 8))
                assert answer.cls is stun.MessageClass.SUCCESS
                assert answer.transaction_id == request[8:20]
            finally:
                writer.close()

        for _ in range(PROBE_EVERY + 2):  # one connection per event: one accept each
            await binding()
        (listener,) = (h for h in server._tcp_servers if isinstance(h, TlsListener))
        assert listener.accept_budget.limit == 1
        await asyncio.wait_for(asyncio.gather(*(binding() for _ in range(ACCEPT_BATCH + 8))), 30)
        assert server.stats.connections["tls"] == PROBE_EVERY + 2 + ACCEPT_BATCH + 8
        assert server.stats.tls_handshake_failures == 0


def _budgets(server: RelayServer, transport: Transport) -> tuple[ReadBudget, ReadBudget]:
    """The client listener's budget and the one allocation's relayed socket's."""
    if transport == "udp":
        (listener,) = server.udp_listeners
        (allocation,) = listener.clients.values()
        budget = listener.read_budget
    else:
        (dtls,) = server.dtls_listeners
        (session,) = dtls.sessions.values()
        assert session.allocation is not None
        allocation = session.allocation
        budget = dtls.read_budget
    assert isinstance(allocation.relay, RelaySocket)
    return budget, allocation.relay.read_budget


@pytest.mark.parametrize("transport", ["udp", "dtls"])
async def test_a_burst_after_quiet_echoes_is_relayed_whole_both_ways(
    transport: Transport, authority: Authority, served: tuple[TlsFiles, Leaf]
) -> None:
    config = relay_config(listen=(Listen(transport, HostPort("127.0.0.1", 0)),), tls=served[0])
    async with running(config) as server, echo_peer() as (peer, protocol):
        server_address = address(server, transport)
        client = (
            DtlsTurnClient(server_address, dtls_client_context(authority), USER, PASSWORD)
            if transport == "dtls"
            else TurnClient(server_address, USER, PASSWORD)
        )
        await client.open()
        try:
            await client.allocate()
            await client.channel_bind(CHANNEL, peer)
            for index in range(PROBE_EVERY + 3):  # one datagram per event, each way
                client.send_channel(CHANNEL, b"quiet %d" % index)
                assert await asyncio.wait_for(client.receive(), 5) == (
                    CHANNEL,
                    b"quiet %d" % index,
                )
            listener_budget, relayed_budget = _budgets(server, transport)
            assert listener_budget.limit == 1
            assert relayed_budget.limit == 1
            before = len(protocol.received)
            sent = [b"burst %03d" % index for index in range(BURST)]
            for payload in sent:
                client.send_channel(CHANNEL, payload)
            echoed = [await asyncio.wait_for(client.receive(), 5) for _ in sent]
            assert sorted(data for _, data in echoed) == sent
            assert [data for data, _ in protocol.received[before:]] == sent
        finally:
            client.close()
