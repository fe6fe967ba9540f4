"""The TLS transport of ``tls://`` listeners (relay.net.tls_stream), on asyncio's loop and on
uvloop, against the standard library's TLS client over loopback: the handshake and its
deadline, records both ways, a client that stops reading, a graceful and an abrupt end."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from relay.core import certs
from relay.core.certs import TlsFiles
from relay.net.tls_stream import HIGH_WATER, LOW_WATER, TlsStream
from tests.relay.tls_helpers import Authority, Leaf
from tests.tools import require_tool

Run = Callable[[Coroutine[Any, Any, None]], None]
LOOPS: dict[str, Run] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


@pytest.fixture(scope="module")
def leaf(authority: Authority) -> Leaf:
    return authority.leaf("stream")


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    return LOOPS[request.param]


@dataclass
class Recorder(asyncio.Protocol):
    """What the transport told its protocol; echoes when ``echo``."""

    echo: bool = False
    transport: Any = None
    received: bytearray = field(default_factory=bytearray)
    events: list[str] = field(default_factory=list)
    lost: list[Exception | None] = field(default_factory=list)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.echo:
            self.transport.write(data)

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.append(exc)


@dataclass
class Served:
    """One listening socket whose connections each become a :class:`TlsStream`."""

    port: int
    protocols: list[Recorder] = field(default_factory=list)
    outcomes: list[tuple[bool, Exception | None]] = field(default_factory=list)
    streams: list[TlsStream] = field(default_factory=list)


@contextlib.contextmanager
def serving(
    leaf: Leaf, *, echo: bool = False, timeout: float = 5.0, send_buffer: int = 0
) -> Iterator[Served]:
    context = certs.load_pair(TlsFiles(leaf.cert, leaf.key), time.time()).context
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    served = Served(listener.getsockname()[1])
    loop = asyncio.get_running_loop()

    def protocol() -> Recorder:
        served.protocols.append(Recorder(echo=echo))
        return served.protocols[-1]

    def accept() -> None:
        client, address = listener.accept()
        client.setblocking(False)
        if send_buffer:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        stream = TlsStream(
            loop,
            client,
            context,
            protocol,
            peer=address,
            timeout=timeout,
            on_done=lambda _stream, ok, exc: served.outcomes.append((ok, exc)),
        )
        served.streams.append(stream)

    loop.add_reader(listener.fileno(), accept)
    try:
        yield served
    finally:
        loop.remove_reader(listener.fileno())
        listener.close()
        for stream in served.streams:
            stream.abort()


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def connect(port: int, authority: Authority) -> tuple[Any, Any]:
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=authority.client_context(), server_hostname="127.0.0.1"
    )


def _blocking_client(port: int, authority: Authority) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return authority.client_context().wrap_socket(
        raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
    )


def _read_to_the_end(client: ssl.SSLSocket) -> bytes:
    """Everything until the server's close_notify (a FIN without it raises SSLEOFError)."""
    data = b""
    for _ in range(100):
        chunk = client.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("no end")


def test_records_both_ways_and_a_graceful_end(run: Run, leaf: Leaf, authority: Authority) -> None:
    async def main() -> None:
        with serving(leaf, echo=True) as served:
            reader, writer = await connect(served.port, authority)
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "stun.turn"
            sent = echoed = b""
            for index in range(200):  # records one by one, then a burst of them
                chunk = bytes([index]) * (1 + index * 7)
                writer.write(chunk)
                sent += chunk
                if index < 20:
                    await writer.drain()
                    echoed += await reader.readexactly(len(chunk))
            await writer.drain()
            echoed += await asyncio.wait_for(reader.readexactly(len(sent) - len(echoed)), 10)
            assert echoed == sent
            assert bytes(served.protocols[0].received) == sent
            (protocol,) = served.protocols
            assert served.outcomes == [(True, None)]
            stream = protocol.transport
            assert stream.get_extra_info("peername")[0] == "127.0.0.1"
            assert stream.get_extra_info("sockname")[1] == served.port
            writer.close()
            await until(lambda: protocol.events[-1:] == ["lost"])
            assert protocol.events == ["made", "eof", "lost"] and protocol.lost == [None]
            # The relay ends a connection: what it wrote last, then a close_notify (a client
            # that takes a FIN without one as an attack sees a clean end).
            client = await asyncio.to_thread(_blocking_client, served.port, authority)
            await until(lambda: len(served.protocols) == 2)
            stream = served.protocols[1].transport
            stream.write(b"last words")
            stream.close()
            assert stream.is_closing()
            with client:
                assert await asyncio.to_thread(_read_to_the_end, client) == b"last words"
            await until(lambda: served.protocols[1].events[-1:] == ["lost"])

    run(main())


def test_a_client_that_stops_reading_pauses_writing_and_loses_nothing(
    run: Run, leaf: Leaf, authority: Authority
) -> None:
    async def main() -> None:
        with serving(leaf, send_buffer=4096) as served:
            raw = socket.create_connection(("127.0.0.1", served.port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader, writer = await asyncio.open_connection(
                sock=raw, ssl=authority.client_context(), server_hostname="127.0.0.1"
            )
            await until(lambda: len(served.protocols) == 1)
            protocol = served.protocols[0]
            stream = protocol.transport
            block = bytes(range(256)) * 64  # 16 KiB
            written = bytearray()
            for index in range(400):  # until the socket and the client's buffers are full
                if "pause" in protocol.events:
                    break
                stream.write(block[index % 7 :])  # blocks of different lengths
                written += block[index % 7 :]
                await asyncio.sleep(0)
            assert "pause" in protocol.events, "the stream never filled up"
            # What is kept is bounded by the pause: the protocol stopped at the mark (a
            # block's record adds its header and tag to what is kept).
            assert HIGH_WATER < stream.get_write_buffer_size() <= HIGH_WATER + len(block) + 64
            got = bytearray()
            while len(got) < len(written):  # slowly: the relay's sends are partial
                got += await asyncio.wait_for(reader.read(4096), 10)
                await asyncio.sleep(0)
            assert got == written  # in order, nothing lost or repeated
            await until(lambda: stream.get_write_buffer_size() == 0)
            assert protocol.events[-1] == "resume"
            assert stream.get_write_buffer_limits() == (LOW_WATER, HIGH_WATER)
            writer.close()
            await until(lambda: "lost" in protocol.events)
            assert protocol.events[1:] == ["pause", "resume", "eof", "lost"]

    run(main())


def test_a_client_that_goes_ends_the_connection_once(
    run: Run, leaf: Leaf, authority: Authority
) -> None:
    async def main() -> None:
        with serving(leaf, echo=True) as served:
            for how in ("close_notify", "fin", "reset"):
                reader, writer = await connect(served.port, authority)
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
                protocol = served.protocols[-1]
                if how == "close_notify":
                    writer.close()  # asyncio's client sends a close_notify
                else:
                    sock = writer.get_extra_info("socket")
                    if how == "reset":
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    writer.transport.abort()
                await until(lambda p=protocol: "lost" in p.events)  # type: ignore[misc]
                assert protocol.events.count("lost") == 1
            assert [ok for ok, _ in served.outcomes] == [True, True, True]

    run(main())


def test_handshakes_that_fail_or_never_end_are_closed_and_reported(run: Run, leaf: Leaf) -> None:
    async def main() -> None:
        with serving(leaf, timeout=0.3) as served:
            # Garbage: an alert, then a clean EOF (not a reset that could cut the alert off).
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n" * 8)
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer[:1] in (b"", b"\x15")  # nothing, or a TLS alert record
            writer.close()
            # Silent: closed at the deadline.
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            waited = time.monotonic() - started
            writer.close()
            await until(lambda: len(served.outcomes) == 2)
            (bad, bad_error), (silent, silent_error) = served.outcomes
            assert not bad and isinstance(bad_error, ssl.SSLError)
            assert not silent and isinstance(silent_error, TimeoutError)
            assert 0.25 <= waited < 3.0
            assert not served.protocols  # no protocol before a finished handshake
            # Aborted during the handshake (the listener closing): reported once.
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            await until(lambda: len(served.streams) == 3)
            served.streams[-1].abort()
            served.streams[-1].abort()
            assert served.outcomes[2:] == [(False, None)]  # aborted: no error to count
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

    run(main())


def test_a_tls_1_2_client_is_served_as_a_tls_1_3_one(
    run: Run, leaf: Leaf, authority: Authority, tmp_path: Path
) -> None:
    async def main() -> None:
        with serving(leaf, echo=True) as served:
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                context = authority.client_context()
                context.minimum_version = context.maximum_version = version
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", served.port, ssl=context, server_hostname="127.0.0.1"
                )
                writer.write(b"x" * 40000)  # more than a record
                assert await reader.readexactly(40000) == b"x" * 40000
                assert served.protocols[-1].transport.get_extra_info("ssl_object").version() == (
                    "TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
                )
                writer.close()

    run(main())


class SClient:
    """``openssl s_client`` against a served port: lines in on its stdin (``K``: a TLS 1.3
    KeyUpdate asking for one back, ``R``: a TLS 1.2 renegotiation), everything it prints
    (``-msg``: each TLS message both ways) collected in :attr:`seen`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen = b""

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, port: int, authority: Authority, version: str) -> AsyncIterator[SClient]:
        process = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
            str(authority.cert), version, "-alpn", "stun.turn", "-msg",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        client = cls(process)
        try:
            yield client
        finally:
            await client.stop()

    def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + b"\n")

    async def wait_for(self, text: bytes) -> None:
        assert self.process.stdout is not None
        while text not in self.seen:
            line = await asyncio.wait_for(self.process.stdout.readline(), 10)
            assert line, f"{text!r} not seen in:\n" + self.seen.decode(errors="replace")[-3000:]
            self.seen += line

    async def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()


def test_post_handshake_messages_from_openssl_s_client(
    run: Run, leaf: Leaf, authority: Authority
) -> None:
    """What OpenSSL writes while it reads goes out: a TLS 1.3 KeyUpdate asking for one back
    (RFC 8446 §4.6.3) is answered and records flow both ways under the new keys; a TLS 1.2
    renegotiation (refused: RFC 5746 does not oblige a server) gets its no_renegotiation
    warning at once, and the client's fatal alert that follows ends that connection only."""
    require_tool("openssl")

    async def main() -> None:
        with serving(leaf, echo=True) as served:
            async with SClient.running(served.port, authority, "-tls1_3") as updating:
                updating.send(b"before-update")
                await updating.wait_for(b"before-update\n")
                updating.send(b"K")
                await updating.wait_for(b"KEYUPDATE")
                updating.send(b"after-update")
                await updating.wait_for(b"after-update\n")
                # OpenSSL 3.0 sends the requested KeyUpdate with the next write: the echo.
                answer = updating.seen.index(b"<<< TLS 1.3, Handshake [length 0005], KeyUpdate")
                assert answer < updating.seen.index(b"after-update\n")
                assert served.protocols[0].received == b"before-update\nafter-update\n"
                async with SClient.running(served.port, authority, "-tls1_2") as renegotiating:
                    renegotiating.send(b"hello")
                    await renegotiating.wait_for(b"hello\n")
                    renegotiating.send(b"R")
                    await renegotiating.wait_for(b"warning no_renegotiation")
                    await until(lambda: "lost" in served.protocols[1].events)
                    assert isinstance(served.protocols[1].lost[0], ssl.SSLError)
                updating.send(b"still-served")
                await updating.wait_for(b"still-served\n")
                assert "lost" not in served.protocols[0].events

    run(main())
