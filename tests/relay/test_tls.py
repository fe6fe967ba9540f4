"""TURN over TLS (RFC 8656 §3.1, RFC 7065, RFC 7443): real clients on loopback.

aioice's TURN client over TLS, coturn's ``turnutils_uclient -t -S``, plain ``ssl`` clients
for the certificate served, certificate rotation under load (file replacement and a
Kubernetes-style ``..data`` symlink swap, a bad pair refused), handshake garbage and
deadlines, and the start-up errors of the TLS flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioice.turn import create_turn_endpoint
from structlog.testing import capture_logs

from relay.config import Listen
from relay.core.auth import long_term_key, rest_credentials
from relay.core.certs import CertError, CertWatch, TlsFiles, load_pair, poll, stamp
from relay.net.server import RelayServer
from relay.net.tls_stream import HIGH_WATER
from relay.proto import stun
from relay.proto import turn as proto_turn
from relay.proto.stun import MessageBuilder, MessageClass
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
    relay_process,
    report_of,
    running,
    until,
)
from tests.relay.test_coturn import Outcome
from tests.relay.tls_helpers import Authority, Leaf, fingerprint, install, served_certificate
from tests.relay.turn_client import echo_peer, read_stream_message


class Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))


def tls_config(files: TlsFiles, **overrides: Any) -> Any:
    return relay_config(
        listen=(
            Listen("udp", HostPort("127.0.0.1", 0)),
            Listen("tls", HostPort("127.0.0.1", 0)),
        ),
        tls=files,
        **overrides,
    )


@dataclasses.dataclass
class Echoing:
    """An aioice TURN allocation over TLS that keeps echoing through a peer."""

    transport: Any
    receiver: Receiver
    peer: tuple[str, int]
    sent: int = 0
    received: int = 0

    async def round_trip(self) -> None:
        payload = f"echo {self.sent}".encode()
        self.sent += 1
        self.transport.sendto(payload, self.peer)
        data, source = await asyncio.wait_for(self.receiver.queue.get(), 5)
        assert (data, tuple(source)) == (payload, self.peer)
        self.received += 1


async def _loop(echoing: Echoing) -> None:
    while True:
        await echoing.round_trip()
        await asyncio.sleep(0.01)


async def _allocate(
    server: RelayServer, authority: Authority, username: str = USER, password: str = PASSWORD
) -> tuple[Any, Receiver]:
    return await asyncio.wait_for(
        create_turn_endpoint(
            Receiver,
            server_addr=address(server, "tls"),
            username=username,
            password=password,
            transport="tcp",
            ssl=authority.client_context(),
        ),
        10,
    )


async def test_aioice_over_tls_allocates_and_echoes(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, leaf = served
    async with running(tls_config(files)) as server, echo_peer() as (peer, protocol):
        started = time.perf_counter()
        turn, receiver = await _allocate(server, authority)
        allocated_in = time.perf_counter() - started
        try:
            echoing = Echoing(turn, receiver, peer)
            for _ in range(20):
                await echoing.round_trip()
            assert protocol.received[0][1] == tuple(turn.get_extra_info("sockname"))
            assert server.stats.allocations["tls"] == 1
            assert server.stats.allocations["tcp"] == 0
            assert server.stats.connections["tls"] == 1
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://{server.health_address}/status") as response,
            ):
                status = await response.json()
            assert status["allocations"]["tls"] == 1
            assert status["connections_total"]["tls"] == 1
            assert status["tls_handshake_failures"] == 0
            (listener,) = [item for item in server.listeners if item.transport == "tls"]
            certificate = status["tls"][str(listener)]
            assert certificate["fingerprint_sha256"] == leaf.fingerprint
            assert certificate["subject"] == f"CN={leaf.cert.stem}"
            assert certificate["not_after"].endswith("Z")
            assert certificate["serial"] == f"{leaf.serial:02X}"
            # Media is small writes: Nagle's algorithm would hold each one for an ACK.
            (allocation,) = server.table
            sock = allocation.link._transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            turn.close()
        await until(lambda: not len(server.table))
        assert server.stats.allocations["tls"] == 0
        events = RECORDED[id(server)]
        assert [e.transport for e in events] == ["tls", "tls"]  # created, deleted
        report = report_of(server.stats.snapshot(), events)
        assert wire.decode(wire.encode(report)) == report  # reports carry tls as they are
        assert report.state.connections_total["tls"] == 1
    print(
        f"TLS allocation (TCP connect + handshake + 401 + Allocate): {allocated_in * 1000:.1f} ms"
    )


async def test_aioice_over_tls_with_rest_credentials(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    username, password = rest_credentials(SECRET, "web-client", time.time(), ttl=600)
    async with running(tls_config(files)) as server, echo_peer() as (peer, _protocol):
        turn, receiver = await _allocate(server, authority, username, password)
        try:
            await Echoing(turn, receiver, peer).round_trip()
            assert server.stats.allocations["tls"] == 1
        finally:
            turn.close()


async def test_the_tls_listener_negotiates_stun_turn_and_no_alpn(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    async with running(tls_config(files)) as server:
        host, port = address(server, "tls")
        for offered, chosen in ((["stun.turn"], "stun.turn"), (None, None)):
            context = ssl.create_default_context(cafile=str(authority.cert))
            if offered is not None:
                context.set_alpn_protocols(offered)
            _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
            ssl_object = writer.get_extra_info("ssl_object")
            assert ssl_object.selected_alpn_protocol() == chosen
            assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
            writer.close()
        await until(lambda: server.stats.connections["tls"] == 2)
        assert server.stats.tls_handshake_failures == 0


def _binding_over_tls_1_3(port: int, context: ssl.SSLContext) -> ssl.SSLSession | None:
    """A STUN Binding (RFC 8489 §5) over a new TLS 1.3 connection; the session after the
    answer (a TLS 1.3 server's tickets come after its Finished and are read with data)."""
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12))
        answer = tls.recv(2048)
        assert answer[:2] == b"\x01\x01", answer  # Binding success response
        return tls.session


async def test_a_tls_1_3_handshake_ends_with_one_session_ticket(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    """Without any ticket the server sends nothing after its Finished, so a client with
    Nagle's algorithm on holds its first request for the delayed-ACK timer (40 ms on Linux)
    on every new connection; one stateless ticket keeps that flight going."""
    files, _ = served
    async with running(tls_config(files)) as server:
        port = address(server, "tls")[1]
        session = await asyncio.to_thread(_binding_over_tls_1_3, port, authority.client_context())
        assert session is not None and session.has_ticket


async def test_tls_below_1_2_is_refused_and_counted(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    async with running(tls_config(files)) as server:
        host, port = address(server, "tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(authority.cert))
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1_1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, ConnectionError)) as error:
            await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
        print(f"TLS 1.1 client: {error.value!r}")
        await until(lambda: server.stats.tls_handshake_failures == 1)


async def test_bad_handshakes_are_closed_counted_and_not_logged(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    files, _ = served
    config = tls_config(files, tls_handshake_timeout=0.5)
    async with running(config) as server, echo_peer() as (peer, _protocol):
        host, port = address(server, "tls")
        turn, receiver = await _allocate(server, authority)
        echoing = Echoing(turn, receiver, peer)
        looping = asyncio.create_task(_loop(echoing))
        try:
            with capture_logs() as logs:
                # Garbage instead of a ClientHello: closed at once.
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
                await writer.drain()
                await asyncio.wait_for(reader.read(), 5)  # at most an alert, then EOF
                writer.close()
                # A STUN Binding request in the clear (a client that forgot TLS).
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(bytes.fromhex("000100002112a442") + os.urandom(12))
                await writer.drain()
                await asyncio.wait_for(reader.read(), 5)
                writer.close()
                # Connects and never sends: closed after the deadline.
                started = time.monotonic()
                reader, writer = await asyncio.open_connection(host, port)
                assert await asyncio.wait_for(reader.read(), 5) == b""
                silent_for = time.monotonic() - started
                writer.close()
                # Half a ClientHello, then nothing (slowloris): the same deadline.
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(bytes.fromhex("16030100c8010000c40303"))
                await writer.drain()
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
                await until(lambda: server.stats.tls_handshake_failures == 4)
                received = echoing.received
                await until(lambda: echoing.received > received + 5)  # served throughout
            assert 0.4 <= silent_for < 3.0
            assert not [e for e in logs if e["log_level"] in ("info", "warning", "error")], logs
            assert not looping.done()
            assert server.stats.connections["tls"] == 1  # only the real client
            assert all(not getattr(h, "handshakes", 0) for h in server._tcp_servers)
        finally:
            looping.cancel()
            turn.close()


class StalledClient:
    """A blocking TURN client over TCP or TLS with a small receive buffer: it allocates and
    binds channel 0x4001 to a peer, then reads nothing until told (its window shuts for
    real, whatever a client library would buffer)."""

    def __init__(self, where: tuple[str, int], context: ssl.SSLContext | None) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(5)
        raw.connect(where)
        self.sock: socket.socket = (
            raw if context is None else context.wrap_socket(raw, server_hostname="127.0.0.1")
        )
        self.realm = self.nonce = ""
        self.key = b""

    def _send_signed(self, builder: MessageBuilder) -> None:
        for attribute, text in ((stun.USERNAME, USER), (stun.REALM, self.realm)):
            builder.add_text(attribute, text)
        builder.add_text(stun.NONCE, self.nonce)
        self.sock.sendall(builder.encode(integrity_key=self.key, fingerprint=True))

    def allocate_and_bind(self, peer: tuple[str, int]) -> tuple[str, int]:
        request = proto_turn.ALLOCATE, MessageClass.REQUEST
        transport = proto_turn.REQUESTED_TRANSPORT, proto_turn.encode_requested_transport(17)
        self.sock.sendall(MessageBuilder(*request).add(*transport).encode(fingerprint=True))
        challenge = read_stream_message(self.sock)
        self.realm = challenge.get_text(stun.REALM) or ""
        self.nonce = challenge.get_text(stun.NONCE) or ""
        self.key = long_term_key(USER, self.realm, PASSWORD)
        self._send_signed(MessageBuilder(*request).add(*transport))
        allocated = read_stream_message(self.sock)
        relayed = allocated.get_xor_address(proto_turn.XOR_RELAYED_ADDRESS)
        assert allocated.cls is MessageClass.SUCCESS and relayed is not None, allocated
        bind = MessageBuilder(proto_turn.CHANNEL_BIND, MessageClass.REQUEST)
        bind.add(proto_turn.CHANNEL_NUMBER, proto_turn.encode_channel_number(0x4001))
        self._send_signed(bind.add_xor_address(proto_turn.XOR_PEER_ADDRESS, *peer))
        assert read_stream_message(self.sock).cls is MessageClass.SUCCESS
        return relayed.host, relayed.port

    def refresh_zero(self) -> None:
        """A signed Refresh with LIFETIME 0 (RFC 8656 §7.3), its answer left unread."""
        refresh = MessageBuilder(proto_turn.REFRESH, MessageClass.REQUEST)
        self._send_signed(refresh.add(proto_turn.LIFETIME, proto_turn.encode_lifetime(0)))

    def read_until(self, marker: bytes, limit: int = 64 * 1024 * 1024) -> None:
        """Read again, until ``marker`` has come (at most ``limit`` bytes)."""
        seen = b""
        while marker not in seen:
            chunk = self.sock.recv(65536)
            assert chunk and len(seen) < limit, "the marker never came"
            seen = seen[-len(marker) :] + chunk


@contextlib.contextmanager
def flooding_peer() -> Iterator[socket.socket]:
    """A peer's UDP socket on loopback (non-blocking), for :func:`flood`."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        yield peer
    finally:
        peer.close()


async def flood(peer: socket.socket, relayed: tuple[str, int], kept: Callable[[], int]) -> None:
    """About 4.8 MB from ``peer`` to ``relayed``, far more than the buffers on the way hold;
    what the relay keeps for the client (``kept``) stays under its high-water mark."""
    block = os.urandom(1200)
    for index in range(4000):
        with contextlib.suppress(BlockingIOError):
            peer.sendto(block, relayed)
        if index % 50 == 0:
            await asyncio.sleep(0.002)
            assert kept() <= HIGH_WATER + 2048


async def test_a_tls_client_that_stops_reading_holds_a_bounded_buffer(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    """A client whose peer floods it while it reads nothing: the relay keeps at most its
    high-water mark for it and drops the rest (as UDP would), serves another client
    throughout, and relays to the stalled one again once it reads."""
    files, _ = served
    async with running(tls_config(files)) as server, echo_peer() as (peer, _protocol):
        turn, receiver = await _allocate(server, authority)
        echoing = Echoing(turn, receiver, peer)
        looping = asyncio.create_task(_loop(echoing))
        where = address(server, "tls")
        stalled = await asyncio.to_thread(StalledClient, where, authority.client_context())
        try:
            with flooding_peer() as flooder:
                relayed = await asyncio.to_thread(stalled.allocate_and_bind, flooder.getsockname())
                (link,) = [a.link for a in server.table if a.relayed == relayed]
                stream = link._transport  # type: ignore[attr-defined]
                await flood(flooder, relayed, stream.get_write_buffer_size)
                await until(lambda: link.paused)  # type: ignore[attr-defined]
                served_during = echoing.received
                await until(lambda: echoing.received > served_during + 5)
                reading = asyncio.to_thread(stalled.read_until, b"after the stall")
                reader = asyncio.ensure_future(reading)
                await until(lambda: not link.paused)  # type: ignore[attr-defined]
                await until(lambda: stream.get_write_buffer_size() == 0)
                flooder.sendto(b"after the stall", relayed)
                await asyncio.wait_for(reader, 10)
            assert not looping.done()
        finally:
            looping.cancel()
            stalled.sock.close()
            turn.close()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_a_closed_connection_whose_client_does_not_read_is_aborted(
    served: tuple[TlsFiles, Leaf], authority: Authority, transport: str
) -> None:
    """A close waits for what is left to send; a client that reads nothing (its window shut,
    data still held for it) is aborted a grace period later instead of keeping its
    connection, descriptor and buffers for good."""
    files, _ = served
    config = relay_config(
        listen=(Listen("tcp", HostPort("127.0.0.1", 0)), Listen("tls", HostPort("127.0.0.1", 0))),
        tls=files,
    )
    async with running(
        config, sweep_interval=0.05, tcp_idle_timeout=0.3, tcp_close_grace=0.5
    ) as server:
        context = authority.client_context() if transport == "tls" else None
        client = await asyncio.to_thread(StalledClient, address(server, transport), context)
        try:
            with flooding_peer() as flooder:
                relayed = await asyncio.to_thread(client.allocate_and_bind, flooder.getsockname())
                (link,) = server.connections
                await flood(flooder, relayed, link._transport.get_write_buffer_size)  # type: ignore[union-attr]
            await until(lambda: link.paused)
            # Refresh 0 deletes the allocation (its answer is dropped: the link is backed
            # up); idle, the connection is closed, and it cannot finish closing.
            await asyncio.to_thread(client.refresh_zero)
            await until(lambda: not len(server.table))
            await until(lambda: link.closing_since is not None)
            closed_at = time.monotonic()
            await until(lambda: not server.connections)
            assert time.monotonic() - closed_at >= 0.4  # the grace, then the abort
            assert server.admission.pending == 0
        finally:
            client.sock.close()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_a_client_that_sends_its_fin_and_does_not_read_is_aborted(
    served: tuple[TlsFiles, Leaf], authority: Authority, transport: str
) -> None:
    """The client ends its half (a FIN, no close_notify) while data is held for it and reads
    nothing: the relay closes the connection, and aborts it a grace period later, with its
    allocation (reason ``error``), instead of holding both until the allocation expires."""
    files, _ = served
    config = relay_config(
        listen=(Listen("tcp", HostPort("127.0.0.1", 0)), Listen("tls", HostPort("127.0.0.1", 0))),
        tls=files,
    )
    async with running(config, sweep_interval=0.05, tcp_close_grace=0.5) as server:
        context = authority.client_context() if transport == "tls" else None
        client = await asyncio.to_thread(StalledClient, address(server, transport), context)
        try:
            with flooding_peer() as flooder:
                relayed = await asyncio.to_thread(client.allocate_and_bind, flooder.getsockname())
                (link,) = server.connections
                await flood(flooder, relayed, link._transport.get_write_buffer_size)  # type: ignore[union-attr]
            await until(lambda: link.paused)
            # The raw socket's shutdown: a FIN under the TLS layer, no close_notify.
            socket.socket.shutdown(client.sock, socket.SHUT_WR)
            await until(lambda: link.closing_since is not None)
            closed_at = time.monotonic()
            assert len(server.table) == 1  # the allocation lives until the connection ends
            await until(lambda: not server.connections)
            assert time.monotonic() - closed_at >= 0.4  # the grace, then the abort
            assert not len(server.table)
            deleted = [e for e in RECORDED[id(server)] if isinstance(e, wire.AllocationDeleted)]
            assert [e.reason for e in deleted] == ["error"]
            assert server.admission.pending == 0
        finally:
            client.sock.close()


def test_handshake_failures_on_uvloop_are_closed_and_counted(authority: Authority) -> None:
    """The same bad inputs against a ``python -m relay`` process on its default loop
    (uvloop)."""
    leaf = authority.leaf("uvloop")
    tls = ("--listen", "tls://127.0.0.1:0", "--tls-cert", str(leaf.cert), "--tls-key")
    with relay_process(*tls, str(leaf.key), "--tls-handshake-timeout", "0.5s") as relay:
        assert relay.serving["event_loop"] == "uvloop"
        listen = next(i for i in relay.serving["listen"] if i.startswith("tls://"))
        port = int(listen.rpartition(":")[2])
        context = authority.client_context()
        before = served_certificate(port, context)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as garbage:
            garbage.sendall(b"\x00" * 64 + b"not a ClientHello" * 8)
            with contextlib.suppress(OSError):
                while garbage.recv(4096):
                    pass
        with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
            started = time.monotonic()
            assert silent.recv(4096) == b""
            waited = time.monotonic() - started
        assert fingerprint(served_certificate(port, context)) == fingerprint(before)
        with urllib.request.urlopen(f"{relay.health}/status", timeout=5) as response:
            status = json.load(response)
        assert status["tls_handshake_failures"] == 2
        assert status["connections_total"]["tls"] == 2
        assert 0.4 <= waited < 3.0
        assert not [e for e in relay.lines if e.get("level") in ("warning", "error")]


def _secret_volume(directory: Path, leaf: Leaf, version: str) -> None:
    """A Kubernetes Secret volume: ``tls.crt -> ..data/tls.crt``, ``..data -> ..VERSION``;
    a new version is written beside and ``..data`` swapped atomically."""
    versioned = directory / f"..{version}"
    versioned.mkdir()
    (versioned / "tls.crt").write_bytes(leaf.cert.read_bytes())
    (versioned / "tls.key").write_bytes(leaf.key.read_bytes())
    link = directory / "..data_tmp"
    link.symlink_to(versioned.name)
    os.replace(link, directory / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


async def _served(server: RelayServer, authority: Authority) -> str:
    port = address(server, "tls")[1]
    return fingerprint(
        await asyncio.to_thread(served_certificate, port, authority.client_context())
    )


async def test_rotation_under_load_file_replace_symlink_swap_and_bad_pairs(
    authority: Authority, tmp_path: Path
) -> None:
    first, second, third = (authority.leaf(f"rot-{n}") for n in ("a", "b", "c"))
    expired = authority.leaf("rot-expired", days=-1)
    stranger = authority.leaf("rot-stranger")
    volume = tmp_path / "secret"
    volume.mkdir()
    _secret_volume(volume, first, "v1")
    files = TlsFiles(volume / "tls.crt", volume / "tls.key")
    async with (
        running(tls_config(files), tls_poll_interval=0.05) as server,
        echo_peer() as (peer, _protocol),
    ):
        assert server.tls is not None
        turn, receiver = await _allocate(server, authority)
        echoing = Echoing(turn, receiver, peer)
        looping = asyncio.create_task(_loop(echoing))
        try:
            assert await _served(server, authority) == first.fingerprint

            # A Kubernetes Secret update: the ..data symlink is swapped.
            _secret_volume(volume, second, "v2")
            await until(lambda: server.tls is not None and server.tls.reloads == 1)
            assert await _served(server, authority) == second.fingerprint

            # Bad pairs: refused with one warning each, the old pair stays.
            with capture_logs() as logs:
                cert_only = Leaf(stranger.cert, second.key, stranger.serial)
                _secret_volume(volume, cert_only, "v3")  # key of another certificate
                await until(lambda: server.tls is not None and server.tls.refusals == 1)
                await asyncio.sleep(0.2)  # more polls: no second warning for the same pair
                assert await _served(server, authority) == second.fingerprint
                _secret_volume(volume, expired, "v4")
                await until(lambda: server.tls is not None and server.tls.refusals == 2)
                assert await _served(server, authority) == second.fingerprint
            warnings = [e for e in logs if e["log_level"] == "warning"]
            assert len(warnings) == 2, warnings
            assert "does not match" in warnings[0]["error"]
            assert "--tls-key" in warnings[0]["error"]
            assert "expired" in warnings[1]["error"]
            assert "--tls-cert" in warnings[1]["error"]

            # Plain files replaced in place of the links (new inodes).
            for name in ("tls.crt", "tls.key"):
                (volume / name).unlink()
            install(third, files.cert, files.key)
            await until(lambda: server.tls is not None and server.tls.reloads == 2)
            assert await _served(server, authority) == third.fingerprint

            received = echoing.received
            await until(lambda: echoing.received > received + 5)
            assert not looping.done()
            assert server.stats.allocations["tls"] == 1
            assert server.stats.tls_handshake_failures == 0
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://{server.health_address}/status") as response,
            ):
                status = await response.json()
            (certificate,) = status["tls"].values()
            assert certificate["fingerprint_sha256"] == third.fingerprint
            assert (certificate["reloads"], certificate["reloads_refused"]) == (2, 2)
        finally:
            looping.cancel()
            turn.close()
        assert echoing.received >= 10


def test_watch_decides_once_per_change_and_once_per_refusal(
    authority: Authority, tmp_path: Path
) -> None:
    good, other = authority.leaf("watch-good"), authority.leaf("watch-other")
    files = TlsFiles(tmp_path / "c.pem", tmp_path / "k.pem")
    install(good, files.cert, files.key)
    watch = CertWatch(stamp(files))
    assert poll(watch, files, time.time()) is None
    install(Leaf(other.cert, good.key, 0), files.cert, files.key)
    outcome = poll(watch, files, time.time())
    assert isinstance(outcome, CertError)
    assert poll(watch, files, time.time()) is None  # refused once, not again
    install(other, files.cert, files.key)
    loaded = poll(watch, files, time.time())
    assert not isinstance(loaded, CertError) and loaded is not None
    assert loaded.info.fingerprint_sha256 == other.fingerprint
    assert poll(watch, files, time.time()) is None
    files.key.unlink()  # a half-written Secret: refused, naming the flag
    missing = poll(watch, files, time.time())
    assert isinstance(missing, CertError) and "--tls-key" in str(missing)
    install(other, files.cert, files.key)
    with pytest.raises(CertError, match="expired"):
        load_pair(files, loaded.info.not_after + 1)


# -- start-up errors: exit 2 naming the flag


@pytest.fixture(scope="module")
def bad_files(authority: Authority, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bad")
    good, other = authority.leaf("bad-good"), authority.leaf("bad-other")
    expired = authority.leaf("bad-expired", days=-1)
    unreadable = directory / "unreadable.key"
    unreadable.write_bytes(good.key.read_bytes())
    unreadable.chmod(0)
    garbage = directory / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = directory / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(good.key), "-aes256", "-passout", "pass:secret",
         "-out", str(encrypted)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return {
        "cert": good.cert,
        "key": good.key,
        "other_key": other.key,
        "expired_cert": expired.cert,
        "expired_key": expired.key,
        "missing": directory / "missing.pem",
        "unreadable": unreadable,
        "garbage": garbage,
        "encrypted": encrypted,
    }


BAD_FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "tls listener without cert and key": ((), "--tls-cert"),
    "cert without key": (("--tls-cert", "{cert}"), "--tls-key"),
    "key without cert": (("--tls-key", "{key}"), "--tls-cert"),
    "missing cert file": (("--tls-cert", "{missing}", "--tls-key", "{key}"), "--tls-cert"),
    "missing key file": (("--tls-cert", "{cert}", "--tls-key", "{missing}"), "--tls-key"),
    "not a certificate": (("--tls-cert", "{garbage}", "--tls-key", "{key}"), "--tls-cert"),
    "key of another cert": (("--tls-cert", "{cert}", "--tls-key", "{other_key}"), "--tls-key"),
    "expired cert": (
        ("--tls-cert", "{expired_cert}", "--tls-key", "{expired_key}"),
        "--tls-cert",
    ),
    "bad handshake timeout": (
        ("--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-handshake-timeout", "0s"),
        "--tls-handshake-timeout",
    ),
}
if os.geteuid() != 0:  # root reads a mode-0 file anyway
    BAD_FLAGS["unreadable key file"] = (
        ("--tls-cert", "{cert}", "--tls-key", "{unreadable}"),
        "--tls-key",
    )


def test_an_encrypted_key_is_refused_at_start_not_prompted_for(
    bad_files: dict[str, Path],
) -> None:
    """OpenSSL would ask a terminal for the pass phrase and block the relay's start."""
    argv = [
        sys.executable, "-m", "relay", "--listen", "tls://127.0.0.1:0",
        "--health", "127.0.0.1:0", "--user", f"{USER}:{PASSWORD}",
        "--tls-cert", str(bad_files["cert"]), "--tls-key", str(bad_files["encrypted"]),
    ]  # fmt: skip
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 2, result.stderr
    assert f"--tls-key {bad_files['encrypted']}: the key is encrypted" in result.stderr, (
        result.stderr
    )


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_tls_flags_exit_2_naming_the_flag(case: str, bad_files: dict[str, Path]) -> None:
    flags, named = BAD_FLAGS[case]
    argv = [
        sys.executable, "-m", "relay", "--listen", "tls://127.0.0.1:0",
        "--health", "127.0.0.1:0", "--user", f"{USER}:{PASSWORD}",
        *(flag.format(**bad_files) for flag in flags),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr, result.stderr
    assert "relay serving" not in result.stderr


def test_tls_flags_are_read_from_the_environment(served: tuple[TlsFiles, Leaf]) -> None:
    from relay.settings import load

    files, _ = served
    settings = load(
        ["--listen", "tls://127.0.0.1:0", "--user", "a:b"],
        {"TURNSCALE_TLS_CERT": str(files.cert), "TURNSCALE_TLS_KEY": str(files.key)},
    )
    assert settings.relay.tls == files
    assert settings.relay.listen[0].transport == "tls"


# -- coturn's turnutils_uclient over TLS


@pytest.fixture(scope="module")
def coturn_over_tls(authority: Authority) -> Iterator[dict[str, Outcome]]:
    with uclient_runs(authority, "tls") as results:
        yield results


@pytest.mark.parametrize(
    "variant", ["tls static credentials", "tls rest credentials", "tls send indications"]
)
def test_uclient_over_tls_has_zero_loss(coturn_over_tls: dict[str, Outcome], variant: str) -> None:
    outcome = coturn_over_tls[variant]
    assert outcome.returncode == 0, outcome.output[-2000:]
    assert " error " not in outcome.output, outcome.output[-2000:]
    sent, received = outcome.totals
    assert sent > 0
    assert (outcome.lost, received) == (0, sent), outcome.output[-2000:]


def test_uclient_allocations_counted_under_tls(coturn_over_tls: dict[str, Outcome]) -> None:
    stopped = coturn_over_tls["relay stopped"].output
    assert "'tls':" in stopped, stopped
    assert "'tls': 0" not in stopped, stopped


async def test_handshakes_in_progress_are_capped_per_source_ip(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> None:
    """Silent clients beyond --tcp-max-pending-per-ip are closed at accept instead of each
    holding a socket for the handshake deadline; a real client is served once they go."""
    files, _ = served
    config = tls_config(files, tls_handshake_timeout=30.0, tcp_max_pending_per_ip=4)
    async with running(config) as server:
        host, port = address(server, "tls")
        silent = [await asyncio.open_connection(host, port) for _ in range(4)]
        await until(lambda: server.handshakes.pending == 4)
        reader, writer = await asyncio.open_connection(host, port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the fifth: closed at once
        writer.close()
        assert server.handshakes.refused == 1 and server.stats.tls_handshake_failures == 1
        for _, silent_writer in silent:
            silent_writer.close()
        await until(lambda: server.handshakes.pending == 0)
        context = authority.client_context()
        _, tls_writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname="127.0.0.1"
        )
        # Done, the handshake no longer counts (its task's callback releases it).
        await until(lambda: server.handshakes.pending == 0)
        assert server.handshakes.refused == 1
        tls_writer.close()
