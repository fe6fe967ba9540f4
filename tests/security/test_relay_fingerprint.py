"""A request with a wrong FINGERPRINT is silently discarded (RFC 8489 §7.3, §14.7).

Found by an attack round: a Binding request whose FINGERPRINT was corrupted was answered.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from relay.proto import stun, turn
from relay.proto.stun import MessageBuilder, MessageClass
from tests.relay.servers import address, relay_config, running
from tests.relay.test_handler import CLIENT, NOW, PEER, WALL, Client, Link, code, make_handler


def corrupt(data: bytes) -> bytes:
    """``data`` with the last byte of its FINGERPRINT flipped."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def test_wrong_fingerprint_is_dropped_by_the_handler() -> None:
    handler, _, recorder = make_handler()
    good = MessageBuilder(stun.BINDING, MessageClass.REQUEST).encode(fingerprint=True)
    assert handler.handle(stun.parse(good), Link(), CLIENT, NOW, WALL) is not None
    assert handler.handle(stun.parse(corrupt(good)), Link(), CLIENT, NOW, WALL) is None
    # authenticated requests and indications alike
    client = Client(handler)
    attributes = [(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17))]
    request = client.signed(client.builder(turn.ALLOCATE, attributes))
    assert client.send(corrupt(request)) is None and not recorder.created
    assert code(client.allocate()) == 200
    assert code(client.request(turn.CREATE_PERMISSION, peers=(PEER,))) == 200
    send = client.builder(turn.SEND, [(turn.DATA, b"x")], (PEER,), cls=MessageClass.INDICATION)
    assert client.send(corrupt(send.encode(fingerprint=True))) is None
    assert recorder.created[0].relay.sent == []  # type: ignore[attr-defined]


async def test_corrupted_binding_gets_no_answer_and_a_correct_one_does() -> None:
    async with running(relay_config()) as server:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(address(server, "udp"))
            good = MessageBuilder(stun.BINDING, MessageClass.REQUEST).encode(fingerprint=True)
            await loop.sock_sendall(sock, corrupt(good))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.5)
            await loop.sock_sendall(sock, good)
            answer = stun.parse(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
            assert answer.cls is MessageClass.SUCCESS and stun.verify_fingerprint(answer)
