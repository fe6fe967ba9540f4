"""A small asyncio TURN client built on the relay's own codec, for tests and benchmarks.

It speaks just enough RFC 8656 to drive a server from the outside: the long-term credential
dance (401 -> retry with REALM/NONCE, 438 -> new NONCE), Allocate, Refresh,
CreatePermission, ChannelBind, Send indications, ChannelData, over UDP or TCP. Every wait is
bounded: a request is retransmitted a few times over UDP, then :class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from relay.core.auth import long_term_key
from relay.proto import stun, turn
from relay.proto.framing import LEGACY_CHANNEL_MAX, StreamDeframer
from relay.proto.stun import Message, MessageBuilder, MessageClass

Address = tuple[str, int]

#: How long :meth:`TurnClient.receive` waits for relayed data.
RECEIVE_TIMEOUT = 3.0


def read_stream_message(sock: socket.socket) -> Message:
    """One STUN message from a blocking stream socket, plain or TLS (RFC 8489 §6.2.2: its
    header gives its length)."""
    data = b""
    needed = 20
    while len(data) < needed:
        chunk = sock.recv(needed - len(data))
        if not chunk:
            raise ConnectionError("closed before a whole STUN message")
        data += chunk
        if len(data) == 20:
            needed = 20 + struct.unpack_from("!H", data, 2)[0]
    return stun.parse(data)


class TurnError(Exception):
    """An error response; ``code`` is its ERROR-CODE."""

    def __init__(self, code: int, response: Message) -> None:
        super().__init__(f"TURN error {code}")
        self.code = code
        self.response = response


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, client: TurnClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._incoming(data)


class _Tcp(asyncio.Protocol):
    def __init__(self, client: TurnClient) -> None:
        self.client = client
        self.deframer = StreamDeframer(channel_max=LEGACY_CHANNEL_MAX)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.deframer.feed(data)
        except stun.StunError:
            self.client.closed.set()
            return
        for frame in frames:
            self.client._incoming(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.closed.set()


class TurnClient:
    """One TURN client (one 5-tuple). Use ``async with TurnClient(...)``."""

    def __init__(
        self,
        server: Address,
        username: str | None = None,
        password: str | None = None,
        *,
        transport: str = "udp",
        timeout: float = 0.5,
        tries: int = 6,
    ) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.transport = transport
        self.timeout = timeout
        self.tries = tries
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None
        self.relayed: Address | None = None
        self.mapped: Address | None = None
        self.lifetime: int | None = None
        self.token: bytes | None = None
        self.closed = asyncio.Event()
        self.data: asyncio.Queue[tuple[Address | int, bytes]] = asyncio.Queue()
        self.channels: dict[int, Address] = {}
        self._pending: dict[bytes, asyncio.Future[Message]] = {}
        self._transport: Any = None

    async def __aenter__(self) -> TurnClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        if self.transport == "udp":
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), remote_addr=self.server, family=family
            )
        else:
            self._transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Tcp(self), self.server[0], self.server[1]), 5
            )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def local(self) -> Address:
        name = self._transport.get_extra_info("sockname")
        return (name[0], name[1])

    # -- raw I/O

    def send_raw(self, data: bytes) -> None:
        if self.transport == "udp":
            self._transport.sendto(data)
        else:
            self._transport.write(data)

    def _incoming(self, data: bytes) -> None:
        if data and 0x40 <= data[0] <= 0x7F:  # ChannelData (RFC 5766's range too)
            if len(data) < 4:
                return
            channel, length = struct.unpack_from("!HH", data)
            self.data.put_nowait((channel, data[4 : 4 + length]))
            return
        try:
            message = stun.parse(data)
        except stun.StunError:
            return
        if message.cls is MessageClass.INDICATION and message.method == turn.DATA_METHOD:
            peer = message.get_xor_address(turn.XOR_PEER_ADDRESS)
            payload = message.get(turn.DATA)
            if peer is not None and payload is not None:
                self.data.put_nowait(((peer.host, peer.port), payload))
            return
        future = self._pending.get(message.transaction_id)
        if future is not None and not future.done():
            future.set_result(message)

    async def transact(self, builder: MessageBuilder, *, sign: bool = True) -> Message:
        """Send a request (signed with the key once known); return the response (success or
        error), retransmitting over UDP."""
        attrs = builder
        if sign and self.key is not None:
            assert self.username is not None and self.realm is not None and self.nonce
            attrs.add_text(stun.USERNAME, self.username)
            attrs.add_text(stun.REALM, self.realm)
            attrs.add_text(stun.NONCE, self.nonce)
            data = attrs.encode(integrity_key=self.key, fingerprint=True)
        else:
            data = attrs.encode(fingerprint=True)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        self._pending[builder.transaction_id] = future
        try:
            tries = self.tries if self.transport == "udp" else 1
            wait = self.timeout if self.transport == "udp" else self.timeout * self.tries
            for _ in range(tries):
                if self.closed.is_set():
                    raise ConnectionError("connection closed")
                self.send_raw(data)
                done, _ = await asyncio.wait({future}, timeout=wait)
                if done:
                    return future.result()
            raise TimeoutError(f"no answer to {builder.method:#x} from {self.server}")
        finally:
            self._pending.pop(builder.transaction_id, None)

    async def request(
        self,
        method: int,
        attributes: list[tuple[int, bytes]] | None = None,
        peers: tuple[Address, ...] = (),
    ) -> Message:
        """An authenticated request (``peers`` become XOR-PEER-ADDRESS attributes): the
        401/438 dance as needed. Raises :class:`TurnError` for an error response."""
        response: Message | None = None
        for _ in range(3):
            builder = MessageBuilder(method, MessageClass.REQUEST)
            for attr_type, value in attributes or []:
                builder.add(attr_type, value)
            for peer in peers:
                builder.add_xor_address(turn.XOR_PEER_ADDRESS, peer[0], peer[1])
            response = await self.transact(builder)
            if response.cls is MessageClass.SUCCESS:
                return response
            error = response.get_error_code()
            code = 0 if error is None else error.code
            realm = response.get_text(stun.REALM)
            nonce = response.get_text(stun.NONCE)
            if code == 401 and self.key is None and realm and nonce and self.username:
                assert self.password is not None
                self.realm, self.nonce = realm, nonce
                self.key = long_term_key(self.username, realm, self.password)
                continue
            if code == 438 and nonce:
                self.nonce = nonce
                continue
            raise TurnError(code, response)
        assert response is not None
        raise TurnError(0, response)

    # -- TURN

    async def allocate(
        self, lifetime: int | None = None, extra: list[tuple[int, bytes]] | None = None
    ) -> Address:
        attributes = [(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17))]
        if lifetime is not None:
            attributes.append((turn.LIFETIME, turn.encode_lifetime(lifetime)))
        attributes.extend(extra or [])
        response = await self.request(turn.ALLOCATE, attributes)
        relayed = response.get_xor_address(turn.XOR_RELAYED_ADDRESS)
        mapped = response.get_xor_address(stun.XOR_MAPPED_ADDRESS)
        lifetime_value = response.get(turn.LIFETIME)
        assert relayed is not None and mapped is not None and lifetime_value is not None
        self.relayed = (relayed.host, relayed.port)
        self.mapped = (mapped.host, mapped.port)
        self.lifetime = turn.decode_lifetime(lifetime_value)
        token = response.get(turn.RESERVATION_TOKEN)
        self.token = None if token is None else turn.decode_reservation_token(token)
        return self.relayed

    async def refresh(self, lifetime: int | None = None) -> int:
        attributes = [] if lifetime is None else [(turn.LIFETIME, turn.encode_lifetime(lifetime))]
        response = await self.request(turn.REFRESH, attributes)
        value = response.get(turn.LIFETIME)
        assert value is not None
        return turn.decode_lifetime(value)

    async def create_permission(self, *peers: Address) -> None:
        await self.request(turn.CREATE_PERMISSION, peers=peers)

    async def channel_bind(self, channel: int, peer: Address) -> None:
        await self.request(
            turn.CHANNEL_BIND, [(turn.CHANNEL_NUMBER, turn.encode_channel_number(channel))], (peer,)
        )
        self.channels[channel] = peer

    def send_indication(self, peer: Address, data: bytes) -> None:
        builder = MessageBuilder(turn.SEND, MessageClass.INDICATION)
        builder.add_xor_address(turn.XOR_PEER_ADDRESS, peer[0], peer[1])
        builder.add(turn.DATA, data)
        self.send_raw(builder.encode())

    def send_channel(self, channel: int, data: bytes) -> None:
        header = struct.pack("!HH", channel, len(data))
        pad = b"\x00" * (-len(data) & 3) if self.transport == "tcp" else b""
        self.send_raw(header + data + pad)

    async def receive(self) -> tuple[Address | int, bytes]:
        """The next Data indication ``(peer, data)`` or ChannelData ``(channel, data)``, within
        :data:`RECEIVE_TIMEOUT` seconds."""
        return await asyncio.wait_for(self.data.get(), RECEIVE_TIMEOUT)

    async def binding(self) -> Address:
        response = await self.transact(
            MessageBuilder(stun.BINDING, MessageClass.REQUEST), sign=False
        )
        mapped = response.get_xor_address(stun.XOR_MAPPED_ADDRESS)
        assert mapped is not None
        return (mapped.host, mapped.port)


class EchoPeer(asyncio.DatagramProtocol):
    """A UDP peer that sends every datagram back (the media server stand-in)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[bytes, Any]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))
        if self.transport is not None:
            self.transport.sendto(data, addr)


@contextlib.asynccontextmanager
async def echo_peer(host: str = "127.0.0.1") -> Any:
    """``async with echo_peer() as (address, protocol)``."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(EchoPeer, local_addr=(host, 0))
    try:
        name = transport.get_extra_info("sockname")
        yield (name[0], name[1]), protocol
    finally:
        transport.close()
