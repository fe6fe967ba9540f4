"""TURN over DTLS 1.2 (RFC 8656 §3.1, RFC 6347, RFC 7350): real clients on loopback.

A pyOpenSSL DTLS client carrying the tests' TURN client, coturn's ``turnutils_uclient -S``
over UDP (static and REST credentials), raw datagrams for the cookie exchange (a stateless
HelloVerifyRequest no larger than the ClientHello, a flood from many sources that never
answer, a cookie replayed from another address), garbage, a handshake left unfinished
(retransmitted, then dropped at the deadline), the per-source handshake cap, certificate
rotation under a flowing session, drain, close_notify and idle sessions, and the start-up
error of a ``dtls://`` listener without a certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

import relay
from relay.config import Listen
from relay.core.auth import rest_credentials
from relay.core.certs import TlsFiles
from relay.net.dtls import DtlsListener
from relay.net.dtls_cookies import COOKIE_SIZE, CookieJar
from relay.net.dtls_records import datagrams, is_client_hello, scan
from relay.net.server import RelayServer
from scaler import wire
from scaler.common.flags import HostPort
from tests.relay.secure_uclient import uclient_runs
from tests.relay.servers import (
    PASSWORD,
    RECORDED,
    SECRET,
    USER,
    address,
    relay_config,
    report_of,
    running,
    until,
)
from tests.relay.test_coturn import Outcome
from tests.relay.tls_helpers import (
    Authority,
    DtlsChannel,
    DtlsTurnClient,
    Leaf,
    answer,
    client_hello,
    dtls_client_context,
    dtls_handshake,
    dtls_served_fingerprint,
    fingerprint,
    install,
    served_certificate,
)
from tests.relay.turn_client import TurnError, echo_peer

CHANNEL = 0x4000
#: DTLS handshake message type of a HelloVerifyRequest (RFC 6347 §4.2.1).
HELLO_VERIFY_REQUEST = 3


class Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


@contextlib.asynccontextmanager
async def raw_socket(
    server: tuple[str, int], source: str = "127.0.0.1"
) -> AsyncIterator[tuple[asyncio.DatagramTransport, Receiver]]:
    """A plain UDP socket from ``source`` (any 127/8 address) to ``server``."""
    loop = asyncio.get_running_loop()
    transport, receiver = await loop.create_datagram_endpoint(
        Receiver, local_addr=(source, 0), remote_addr=server
    )
    try:
        yield transport, receiver
    finally:
        transport.close()


def dtls_config(files: TlsFiles, **overrides: Any) -> Any:
    return relay_config(
        listen=(
            Listen("udp", HostPort("127.0.0.1", 0)),
            Listen("dtls", HostPort("127.0.0.1", 0)),
        ),
        tls=files,
        **overrides,
    )


def listener(server: RelayServer) -> DtlsListener:
    (only,) = server.dtls_listeners
    return only


async def status(server: RelayServer) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{server.health_address}/status") as response,
    ):
        result: dict[str, Any] = await response.json()
        return result


@contextlib.asynccontextmanager
async def dtls_client(
    server: RelayServer, authority: Authority, username: str = USER, password: str = PASSWORD
) -> AsyncIterator[DtlsTurnClient]:
    client = DtlsTurnClient(
        address(server, "dtls"), dtls_client_context(authority), username, password
    )
    await client.open()
    try:
        yield client
    finally:
        client.close()


async def bound_to(client: DtlsTurnClient, peer: tuple[str, int]) -> None:
    await client.allocate()
    await client.create_permission(peer)
    await client.channel_bind(CHANNEL, peer)


async def echo(client: DtlsTurnClient, payload: bytes) -> None:
    client.send_channel(CHANNEL, payload)
    assert await client.receive() == (CHANNEL, payload)


@contextlib.asynccontextmanager
async def echoing(client: DtlsTurnClient) -> AsyncIterator[list[int]]:
    """Echo through ``client``'s channel in the background; yields ``[round trips]``."""
    count = [0]

    async def loop() -> None:
        while True:
            await echo(client, f"media {count[0]}".encode())
            count[0] += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(loop())
    try:
        yield count
        before = count[0]
        await until(lambda: count[0] > before + 3 or task.done())
        assert not task.done(), task.exception()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def new_handshake(server: RelayServer, authority: Authority) -> DtlsChannel:
    return await dtls_handshake(address(server, "dtls"), authority)


async def served_fingerprint(server: RelayServer, authority: Authority) -> str:
    return await dtls_served_fingerprint(address(server, "dtls"), authority)


# -- a session carries what UDP carries


@pytest.mark.parametrize("direct", [True, False], ids=["direct-records", "public-records"])
async def test_dtls_allocation_echoes_and_is_counted_under_dtls(
    served: tuple[TlsFiles, Leaf],
    authority: Authority,
    direct: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same with records through OpenSSL's functions and through pyOpenSSL's methods."""
    monkeypatch.setattr(DtlsListener, "direct_records", direct)
    files, leaf = served
    async with running(dtls_config(files)) as server, echo_peer() as (peer, protocol):
        async with dtls_client(server, authority) as client:
            assert client.channel is not None
            assert client.channel.connection.get_protocol_version_name() == "DTLSv1.2"
            assert client.channel.connection.get_alpn_proto_negotiated() == b"stun.turn"
            assert client.channel.peer_fingerprint() == leaf.fingerprint
            await bound_to(client, peer)
            for n in range(20):
                await echo(client, b"x" * (1 + n))  # no padding over DTLS (RFC 8656 §12.5)
            client.send_indication(peer, b"by indication")
            assert await client.receive() == (CHANNEL, b"by indication")  # the peer has a channel
            assert protocol.received[0][1] == client.relayed
            assert server.stats.allocations["dtls"] == 1
            assert server.stats.allocations["udp"] == 0
            assert server.stats.connections["dtls"] == 1
            body = await status(server)
            assert body["allocations"]["dtls"] == 1
            assert body["connections_total"]["dtls"] == 1
            assert body["tls_handshake_failures"] == 0
            (name,) = body["tls"]
            assert name == f"dtls://127.0.0.1:{address(server, 'dtls')[1]}"
            certificate = body["tls"][name]
            assert certificate["fingerprint_sha256"] == leaf.fingerprint
            assert certificate["sessions"] == 1 and certificate["handshakes"] == 1
            assert certificate["hello_verify_requests"] == 1
            assert certificate["handshaking"] == 0
        await until(lambda: not len(server.table))  # close_notify ended the allocation
        assert not listener(server).sessions
        events = RECORDED[id(server)]
        assert [(type(e), e.transport) for e in events] == [
            (wire.AllocationCreated, "dtls"),
            (wire.AllocationDeleted, "dtls"),
        ]
        assert isinstance(events[1], wire.AllocationDeleted) and events[1].reason == "error"
        report = report_of(server.stats.snapshot(), events)
        assert wire.decode(wire.encode(report)) == report
        assert report.state.connections_total["dtls"] == 1


async def test_a_chain_with_an_intermediate_is_served_whole(
    authority: Authority, tmp_path: Path
) -> None:
    """A client that trusts only the root verifies a leaf signed by an intermediate: the
    relay sends the whole chain from --tls-cert, over DTLS and over TLS."""
    leaf = authority.intermediate("issuing-ca").leaf("chained")
    files = TlsFiles(tmp_path / "tls.crt", tmp_path / "tls.key")
    install(leaf, files.cert, files.key)
    config = relay_config(
        listen=(
            Listen("udp", HostPort("127.0.0.1", 0)),
            Listen("dtls", HostPort("127.0.0.1", 0)),
            Listen("tls", HostPort("127.0.0.1", 0)),
        ),
        tls=files,
    )
    async with running(config) as server:
        async with dtls_client(server, authority) as client:  # trusts the root only
            assert client.channel is not None
            assert client.channel.peer_fingerprint() == leaf.fingerprint
        der = await asyncio.to_thread(
            served_certificate, address(server, "tls")[1], authority.client_context()
        )
        assert fingerprint(der) == leaf.fingerprint


async def test_dtls_with_rest_credentials(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    username, password = rest_credentials(SECRET, "web-client", time.time(), ttl=600)
    async with (
        running(dtls_config(files)) as server,
        echo_peer() as (peer, _protocol),
        dtls_client(server, authority, username, password) as client,
    ):
        await bound_to(client, peer)
        await echo(client, b"rest")
        assert server.stats.allocations["dtls"] == 1


# -- the cookie exchange keeps no state


async def test_hello_without_cookie_gets_a_stateless_smaller_hello_verify_request(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    async with running(dtls_config(files)) as server:
        dtls = listener(server)
        target = address(server, "dtls")
        connection, hello = client_hello(dtls_client_context(authority))
        assert is_client_hello(hello)
        async with raw_socket(target) as (sock, receiver):
            sock.sendto(hello)
            reply = await asyncio.wait_for(receiver.queue.get(), 5)
        assert reply[0] == 22 and reply[13] == HELLO_VERIFY_REQUEST, reply.hex()
        assert len(reply) <= len(hello), (len(reply), len(hello))
        assert dtls.sessions == {} and dtls.handshaking == 0
        assert server.handshakes.pending == 0 and server.admission.pending == 0
        assert dtls.hello_verify_requests == 1
        print(f"ClientHello {len(hello)} bytes -> HelloVerifyRequest {len(reply)} bytes")

        # The cookie answers for its own address only: replayed from elsewhere, another HVR.
        second = answer(connection, reply)
        async with raw_socket(target, "127.0.0.3") as (other, other_receiver):
            other.sendto(second)
            again = await asyncio.wait_for(other_receiver.queue.get(), 5)
        assert again[13] == HELLO_VERIFY_REQUEST
        assert dtls.sessions == {} and dtls.hello_verify_requests == 2


async def test_flood_from_many_sources_holds_no_state(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    """ClientHellos from 400 source addresses that never answer (what a spoofing attacker
    sends): each gets one HelloVerifyRequest, none leaves a session or memory behind (no
    Python object held by the relay's code, no OpenSSL connection in the RSS)."""
    files, _ = served
    async with running(dtls_config(files)) as server, echo_peer() as (peer, _protocol):
        dtls = listener(server)
        target = address(server, "dtls")
        _, hello = client_hello(dtls_client_context(authority))
        async with dtls_client(server, authority) as client:
            await bound_to(client, peer)
            async with echoing(client):
                warm = [f"127.0.1.{n}" for n in range(1, 21)]
                await _flood(target, hello, warm, 5)  # caches and allocator warm
                gc.collect()
                rss = _rss_kib()
                tracemalloc.start()
                try:
                    before = tracemalloc.take_snapshot()
                    sources = [f"127.{2 + n // 200}.{n % 200}.{1 + n % 7}" for n in range(400)]
                    answered = await _flood(target, hello, sources, 10)
                    gc.collect()
                    after = tracemalloc.take_snapshot()
                finally:
                    tracemalloc.stop()
                rss_grown = _rss_kib() - rss
            # Python objects the relay's code allocated and still holds.
            relay_code = [tracemalloc.Filter(True, f"{Path(relay.__file__).parent}/*")]
            held = sum(
                stat.size_diff
                for stat in after.filter_traces(relay_code).compare_to(
                    before.filter_traces(relay_code), "filename"
                )
            )
            assert answered == 4000
            assert dtls.hello_verify_requests == 1 + 100 + 4000  # the client's own first
            assert list(dtls.sessions) == [client.local]
            assert server.handshakes.pending == 0
            print(f"4000 hellos from 400 sources: relay objects {held:+} B, RSS {rss_grown:+} KiB")
            assert held < 16 * 1024, held
            # An OpenSSL connection kept per hello would be 4000 x 4 KiB or more.
            assert rss_grown < 8 * 1024, rss_grown


def _rss_kib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def _flood(target: tuple[str, int], hello: bytes, sources: list[str], each: int) -> int:
    """Send ``each`` copies of ``hello`` from every source; how many answers came back."""
    answered = 0
    for start in range(0, len(sources), 50):
        async with contextlib.AsyncExitStack() as stack:
            sockets = [
                await stack.enter_async_context(raw_socket(target, source))
                for source in sources[start : start + 50]
            ]
            for sock, _ in sockets:
                for _ in range(each):
                    sock.sendto(hello)
            for _, receiver in sockets:
                for _ in range(each):
                    reply = await asyncio.wait_for(receiver.queue.get(), 5)
                    assert reply[13] == HELLO_VERIFY_REQUEST
                    answered += 1
    return answered


# -- bad input, unfinished and capped handshakes, while a real client is served


async def _half_handshake(
    target: tuple[str, int], authority: Authority, source: str, stack: contextlib.AsyncExitStack
) -> Receiver:
    """Pass the cookie exchange from ``source``, then go silent."""
    connection, hello = client_hello(dtls_client_context(authority))
    sock, receiver = await stack.enter_async_context(raw_socket(target, source))
    sock.sendto(hello)
    verify = await asyncio.wait_for(receiver.queue.get(), 5)
    sock.sendto(answer(connection, verify))
    return receiver


async def test_garbage_unfinished_and_capped_handshakes_while_a_client_is_served(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    config = dtls_config(files, tls_handshake_timeout=2.5, tcp_max_pending_per_ip=3)
    async with running(config) as server, echo_peer() as (peer, _protocol):
        dtls = listener(server)
        target = address(server, "dtls")
        async with dtls_client(server, authority) as client:
            await bound_to(client, peer)
            async with echoing(client), contextlib.AsyncExitStack() as stack:
                with capture_logs() as logs:
                    sock, receiver = await stack.enter_async_context(raw_socket(target))
                    garbage = [
                        os.urandom(200),
                        bytes.fromhex("000100002112a442") + os.urandom(12),  # STUN in clear
                        bytes.fromhex("16fefd0000"),  # a torn record header
                        bytes.fromhex("17fefd00010000000000010010") + os.urandom(16),
                        b"\x16\xfe\xfd" + b"\x00" * 8 + b"\xff\xff" + b"\x00" * 60000,
                    ]
                    for datagram in garbage:
                        sock.sendto(datagram)
                    assert client.channel is not None and client.channel.transport is not None
                    client.channel.transport.sendto(b"not a record at all")  # on the session
                    await until(lambda: dtls.garbage == 6)
                    assert receiver.queue.empty()  # garbage gets no answer

                    # Past the cookie, then silent: retransmitted, dropped at the deadline.
                    started = time.monotonic()
                    silent = await _half_handshake(target, authority, "127.0.0.5", stack)
                    await until(lambda: dtls.handshaking == 1)
                    await until(lambda: dtls.handshaking == 0)
                    waited = time.monotonic() - started
                    assert silent.queue.qsize() >= 2  # the first flight, then OpenSSL's resend
                    assert dtls.handshake_failures == 1
                    assert server.stats.tls_handshake_failures == 1

                    # Five from one source IP: three held, two refused.
                    for _ in range(5):
                        await _half_handshake(target, authority, "127.0.0.6", stack)
                    await until(lambda: dtls.refused == 2)
                    assert dtls.handshaking == 3
                    assert server.handshakes.count("127.0.0.6") == 3
                    await until(lambda: dtls.handshaking == 0)  # the deadline again
                assert server.handshakes.pending == 0
            assert 2.4 <= waited < 6.0, waited
            assert not [e for e in logs if e["log_level"] in ("info", "warning", "error")], logs
            assert list(dtls.sessions) == [client.local]
            assert server.stats.connections["dtls"] == 1  # only the real client
            assert server.stats.allocations["dtls"] == 1


# -- certificate rotation


async def test_rotation_while_a_session_flows(authority: Authority, tmp_path: Path) -> None:
    first, second, stranger = (authority.leaf(f"drot-{n}") for n in ("a", "b", "c"))
    files = TlsFiles(tmp_path / "tls.crt", tmp_path / "tls.key")
    install(first, files.cert, files.key)
    async with (
        running(dtls_config(files), tls_poll_interval=0.05) as server,
        echo_peer() as (peer, _protocol),
        dtls_client(server, authority) as client,
    ):
        assert server.tls is not None
        await bound_to(client, peer)
        async with echoing(client) as count:
            assert await served_fingerprint(server, authority) == first.fingerprint
            install(second, files.cert, files.key)
            await until(lambda: server.tls is not None and server.tls.reloads == 1)
            assert await served_fingerprint(server, authority) == second.fingerprint
            with capture_logs() as logs:
                install(Leaf(stranger.cert, second.key, 0), files.cert, files.key)
                await until(lambda: server.tls is not None and server.tls.refusals == 1)
            assert [e["log_level"] for e in logs] == ["warning"]
            assert await served_fingerprint(server, authority) == second.fingerprint
        assert client.channel is not None
        assert client.channel.peer_fingerprint() == first.fingerprint  # it keeps its own
        assert count[0] >= 10
        assert server.stats.allocations["dtls"] == 1
        body = await status(server)
        (certificate,) = body["tls"].values()
        assert certificate["fingerprint_sha256"] == second.fingerprint
        assert (certificate["reloads"], certificate["reloads_refused"]) == (1, 1)


# -- drain, close_notify, idle sessions


async def test_dtls_allocation_keeps_working_through_drain(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    async with (
        running(dtls_config(files)) as server,
        echo_peer() as (peer, _protocol),
        dtls_client(server, authority) as client,
    ):
        await bound_to(client, peer)
        server.begin_drain()
        async with echoing(client):
            assert await client.refresh(900) == 900
            async with dtls_client(server, authority) as late:
                with pytest.raises(TurnError) as refused:
                    await late.allocate()
                assert refused.value.code == 403
        drained = asyncio.create_task(server.wait_drained())
        assert await client.refresh(0) == 0
        await asyncio.wait_for(drained, 5)
        assert server.stats.allocations["dtls"] == 0


async def test_idle_sessions_are_closed_with_close_notify(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    config = dtls_config(files)
    async with running(config, tcp_idle_timeout=0.3, sweep_interval=0.05) as server:
        channel = await new_handshake(server, authority)
        try:
            assert len(listener(server).sessions) == 1
            assert server.admission.pending == 1  # established, no allocation: capped
            await until(lambda: not listener(server).sessions)
            await until(lambda: channel.closed_by_peer)
            assert server.admission.pending == 0
        finally:
            channel.close()


async def test_a_client_restarted_on_the_same_port_replaces_its_session(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    """RFC 6347 §4.2.8: a new handshake (with a valid cookie) from the address of an
    established session ends the old one and its allocation."""
    files, _ = served
    async with running(dtls_config(files)) as server, echo_peer() as (peer, _protocol):
        old = DtlsTurnClient(
            address(server, "dtls"), dtls_client_context(authority), USER, PASSWORD
        )
        await old.open()
        await bound_to(old, peer)
        local = old.local
        assert old.channel is not None and old.channel.transport is not None
        old.channel.transport.close()  # the client dies: no close_notify
        await asyncio.sleep(0.05)  # the socket closes on the next loop iterations
        loop = asyncio.get_running_loop()
        _, channel = await loop.create_datagram_endpoint(
            lambda: DtlsChannel(dtls_client_context(authority), lambda _data: None),
            local_addr=local,
            remote_addr=address(server, "dtls"),
        )
        try:
            await channel.handshake()
            await until(lambda: not len(server.table))
            events = RECORDED[id(server)]
            assert isinstance(events[-1], wire.AllocationDeleted)
            assert events[-1].reason == "error"
            (session,) = listener(server).sessions.values()
            assert session.addr == local and session.established and session.allocation is None
            assert server.stats.connections["dtls"] == 2
        finally:
            channel.close()


async def test_dtls_sessions_without_allocation_are_capped(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    async with running(dtls_config(files, tcp_max_pending_per_ip=2)) as server:
        channels = [await new_handshake(server, authority) for _ in range(3)]
        try:
            await until(lambda: channels[2].closed_by_peer)  # the third: ended at once
            assert len(listener(server).sessions) == 2
            assert listener(server).refused == 1
        finally:
            for channel in channels:
                channel.close()


# -- pieces


def test_cookies_rotate_and_answer_for_one_address_only() -> None:
    now = [100.0]
    jar = CookieJar(rotate_every=60.0, clock=lambda: now[0])
    cookie = jar.cookie(("192.0.2.1", 5000))
    assert len(cookie) == COOKIE_SIZE
    assert jar.valid(("192.0.2.1", 5000), cookie)
    assert not jar.valid(("192.0.2.1", 5001), cookie)
    assert not jar.valid(("192.0.2.2", 5000), cookie)
    assert not jar.valid(("192.0.2.1", 5000), cookie[:-1] + bytes([cookie[-1] ^ 1]))
    now[0] += 61
    assert jar.valid(("192.0.2.1", 5000), cookie)  # the previous secret still answers
    assert jar.cookie(("192.0.2.1", 5000)) != cookie
    now[0] += 61
    assert not jar.valid(("192.0.2.1", 5000), cookie)
    fresh = jar.cookie(("192.0.2.1", 5000))
    now[0] += 500  # long silence: neither secret survives
    assert not jar.valid(("192.0.2.1", 5000), fresh)
    assert "secret" not in repr(jar) and str(cookie) not in repr(jar)


def test_records_are_scanned_and_packed_into_datagrams() -> None:
    def record(kind: int, body: bytes) -> bytes:
        return bytes([kind]) + b"\xfe\xfd" + b"\x00" * 8 + len(body).to_bytes(2, "big") + body

    one, two, big = record(23, b"a" * 100), record(22, b"b" * 500), record(22, b"c" * 1300)
    assert scan(one) == (1, True)
    assert scan(one + two) == (2, False)
    assert scan(one[:-1]) == (0, False)
    assert scan(b"\x99" + one[1:]) == (0, False)
    assert scan(b"") == (0, False)
    assert datagrams(one + two, 1200) == [one + two]
    assert datagrams(two + two + two, 1200) == [two + two, two]
    assert datagrams(one + big + one, 1200) == [one, big, one]
    assert datagrams(b"", 1200) == []


# -- start-up


@pytest.mark.parametrize(
    ("flags", "named"),
    [((), "--tls-cert"), (("--tls-cert", "{cert}", "--tls-key", "{other_key}"), "--tls-key")],
    ids=["no pair", "key of another certificate"],
)
def test_dtls_listener_without_a_valid_pair_exits_2_naming_the_flag(
    authority: Authority, flags: tuple[str, ...], named: str
) -> None:
    good, other = authority.leaf("dstart-good"), authority.leaf("dstart-other")
    paths = {"cert": good.cert, "other_key": other.key}
    argv = [
        sys.executable, "-m", "relay", "--listen", "dtls://127.0.0.1:0",
        "--health", "127.0.0.1:0", "--user", f"{USER}:{PASSWORD}",
        *(flag.format(**paths) for flag in flags),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr, result.stderr
    if not flags:
        assert "--listen dtls://127.0.0.1:0 needs --tls-cert and --tls-key" in result.stderr
    assert "relay serving" not in result.stderr


# -- coturn's turnutils_uclient over DTLS (-S on UDP)


@pytest.fixture(scope="module")
def coturn_over_dtls(authority: Authority) -> Iterator[dict[str, Outcome]]:
    with uclient_runs(authority, "dtls") as results:
        yield results


@pytest.mark.parametrize(
    "variant", ["dtls static credentials", "dtls rest credentials", "dtls send indications"]
)
def test_uclient_over_dtls_has_zero_loss(
    coturn_over_dtls: dict[str, Outcome], variant: str
) -> None:
    assert coturn_over_dtls["event loop"].output == "uvloop"  # the loop pods run on
    outcome = coturn_over_dtls[variant]
    assert outcome.returncode == 0, outcome.output[-2000:]
    assert "method=DTLSv1.2" in outcome.output, outcome.output[-2000:]
    sent, received = outcome.totals
    assert sent > 0
    assert (outcome.lost, received) == (0, sent), outcome.output[-2000:]


def test_uclient_sessions_counted_under_dtls(coturn_over_dtls: dict[str, Outcome]) -> None:
    stopped = coturn_over_dtls["relay stopped"].output
    assert "'dtls':" in stopped, stopped
    assert "'dtls': 0" not in stopped, stopped
