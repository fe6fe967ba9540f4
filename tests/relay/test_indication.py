"""Data indications written in place (RFC 8656 §11.3): what the relay sends a client for a
peer without a channel, checked against a vector and against the reference encoder."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.proto import indication, stun, turn
from relay.proto.stun import PADDING
from tests.relay.vectors import unhex

TID = bytes(range(12))


def in_place(host: str, port: int, data: bytes, transaction_id: bytes = TID) -> bytes:
    """The indication as the relay builds it: data received at the offset, header in front."""
    at = indication.MAX_HEADER_SIZE
    buffer = bytearray(at + len(data) + 4)
    buffer[at : at + len(data)] = data
    if ":" in host:
        attribute = indication.xor_peer_address(host, port, transaction_id)
    else:
        attribute = indication.xor_peer_address_v4(host, port)
    start = indication.write_header(buffer, at, len(data), attribute, transaction_id)
    end = at + len(data)
    pad = -len(data) & 3
    buffer[end : end + pad] = PADDING[pad]
    return bytes(buffer[start : end + pad])


def reference(host: str, port: int, data: bytes, transaction_id: bytes = TID) -> bytes:
    builder = stun.MessageBuilder(turn.DATA_METHOD, stun.MessageClass.INDICATION, transaction_id)
    return builder.add_xor_address(turn.XOR_PEER_ADDRESS, host, port).add(turn.DATA, data).encode()


def test_vector_ipv4() -> None:
    # 192.0.2.1:32853 XORed as in RFC 8489's test vector (B.2), then DATA padded to 8 bytes.
    expected = unhex(
        "0017 0018 2112a442 000102030405060708090a0b"
        "0012 0008 0001 a147 e112a643"
        "0013 0005 68656c6c6f 000000"
    )
    assert in_place("192.0.2.1", 32853, b"hello") == expected
    assert indication.MESSAGE_TYPE == 0x0017
    assert indication.MAX_HEADER_SIZE == 48


def test_vector_ipv6_header_fills_the_room() -> None:
    message = in_place("2001:db8::1", 443, b"abcd")
    assert len(message) == indication.MAX_HEADER_SIZE + 4  # no padding for 4 bytes
    assert message == reference("2001:db8::1", 443, b"abcd")


def test_the_ipv4_attribute_does_not_depend_on_the_transaction() -> None:
    for transaction_id in (TID, bytes(12), b"\xff" * 12):
        assert indication.xor_peer_address_v4("203.0.113.9", 9) == indication.xor_peer_address(
            "203.0.113.9", 9, transaction_id
        )


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: str(ipaddress.IPv6Address(ip))),
)


@settings(deadline=None, max_examples=300)
@given(hosts, st.integers(0, 0xFFFF), st.binary(max_size=300), st.binary(min_size=12, max_size=12))
def test_in_place_is_the_reference_encoding(
    host: str, port: int, data: bytes, transaction_id: bytes
) -> None:
    message = in_place(host, port, data, transaction_id)
    assert message == reference(host, port, data, transaction_id)
    parsed = stun.parse(message)
    assert (parsed.method, parsed.cls) == (turn.DATA_METHOD, stun.MessageClass.INDICATION)
    assert parsed.get_xor_address(turn.XOR_PEER_ADDRESS) == (host, port)
    assert parsed.get(turn.DATA) == data
