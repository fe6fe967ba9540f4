"""TURN constants and attribute codecs (RFC 8656)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay.proto import stun, turn

TID = bytes(range(12))


def test_methods_and_message_types() -> None:
    assert (turn.ALLOCATE, turn.REFRESH, turn.SEND, turn.DATA_METHOD) == (3, 4, 6, 7)
    assert (turn.CREATE_PERMISSION, turn.CHANNEL_BIND) == (8, 9)
    assert stun.message_type(turn.ALLOCATE, stun.MessageClass.ERROR) == 0x0113
    assert stun.message_type(turn.SEND, stun.MessageClass.INDICATION) == 0x0016
    assert stun.message_type(turn.DATA_METHOD, stun.MessageClass.INDICATION) == 0x0017
    assert stun.message_type(turn.CHANNEL_BIND, stun.MessageClass.SUCCESS) == 0x0109


def test_attribute_types() -> None:
    assert turn.CHANNEL_NUMBER == 0x000C
    assert turn.LIFETIME == 0x000D
    assert turn.XOR_PEER_ADDRESS == 0x0012
    assert turn.DATA == 0x0013
    assert turn.XOR_RELAYED_ADDRESS == 0x0016
    assert turn.REQUESTED_ADDRESS_FAMILY == 0x0017
    assert turn.EVEN_PORT == 0x0018
    assert turn.REQUESTED_TRANSPORT == 0x0019
    assert turn.DONT_FRAGMENT == 0x001A
    assert turn.RESERVATION_TOKEN == 0x0022
    assert turn.ADDITIONAL_ADDRESS_FAMILY == 0x8000
    assert turn.ADDRESS_ERROR_CODE == 0x8001
    assert turn.ICMP == 0x8004
    assert turn.TURN_ATTRIBUTES <= turn.KNOWN_ATTRIBUTES
    assert stun.STUN_ATTRIBUTES <= turn.KNOWN_ATTRIBUTES


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (400, "Bad Request"),
        (401, "Unauthenticated"),
        (403, "Forbidden"),
        (420, "Unknown Attribute"),
        (437, "Allocation Mismatch"),
        (438, "Stale Nonce"),
        (440, "Address Family not Supported"),
        (441, "Wrong Credentials"),
        (442, "Unsupported Transport Protocol"),
        (443, "Peer Address Family Mismatch"),
        (486, "Allocation Quota Reached"),
        (508, "Insufficient Capacity"),
    ],
)
def test_error_responses(code: int, reason: str) -> None:
    assert turn.reason_phrase(code) == reason
    request = stun.parse(stun.MessageBuilder(turn.ALLOCATE, stun.MessageClass.REQUEST).encode())
    response = stun.parse(turn.error_response(request, code).encode())
    assert response.cls is stun.MessageClass.ERROR
    assert response.method == turn.ALLOCATE
    assert response.transaction_id == request.transaction_id
    assert response.get_error_code() == (code, reason)


def test_error_response_custom_reason_and_unknown_code() -> None:
    request = stun.parse(stun.MessageBuilder(turn.REFRESH, stun.MessageClass.REQUEST).encode())
    assert stun.parse(turn.error_response(request, 599, "Odd").encode()).get_error_code() == (
        599,
        "Odd",
    )
    assert turn.reason_phrase(599) == "Error"


def test_a_full_allocate_request_is_understood() -> None:
    data = (
        stun.MessageBuilder(turn.ALLOCATE, stun.MessageClass.REQUEST, TID)
        .add(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(turn.TRANSPORT_UDP))
        .add(turn.LIFETIME, turn.encode_lifetime(1200))
        .add(turn.DONT_FRAGMENT, b"")
        .add(turn.EVEN_PORT, turn.encode_even_port(True))
        .add(turn.REQUESTED_ADDRESS_FAMILY, turn.encode_address_family(stun.FAMILY_IPV6))
        .add_xor_address(turn.XOR_PEER_ADDRESS, "198.51.100.1", 5000)
        .add_xor_address(turn.XOR_PEER_ADDRESS, "2001:db8::2", 6000)
        .encode(fingerprint=True)
    )
    message = stun.parse(data)
    assert message.unknown_comprehension_required(turn.KNOWN_ATTRIBUTES) == ()
    assert turn.decode_requested_transport(message.get(turn.REQUESTED_TRANSPORT) or b"") == 17
    assert turn.decode_lifetime(message.get(turn.LIFETIME) or b"") == 1200
    assert turn.decode_even_port(message.get(turn.EVEN_PORT) or b"") is True
    family = turn.decode_address_family(message.get(turn.REQUESTED_ADDRESS_FAMILY) or b"")
    assert family == stun.FAMILY_IPV6
    assert message.get_xor_addresses(turn.XOR_PEER_ADDRESS) == [
        ("198.51.100.1", 5000),
        ("2001:db8::2", 6000),
    ]


def test_value_codecs_round_trip() -> None:
    assert turn.encode_channel_number(0x4001) == b"\x40\x01\x00\x00"
    assert turn.decode_channel_number(b"\x40\x01\xff\xff") == 0x4001  # RFFU ignored
    assert turn.decode_lifetime(turn.encode_lifetime(0xFFFFFFFF)) == 0xFFFFFFFF
    assert turn.decode_even_port(turn.encode_even_port(False)) is False
    assert turn.decode_even_port(b"\x7f") is False
    assert turn.decode_address_family(turn.encode_address_family(stun.FAMILY_IPV4)) == 1
    assert turn.decode_address_family(b"\x03\x00\x00\x00") == 3  # the server answers 440
    assert turn.decode_requested_transport(turn.encode_requested_transport(6)) == 6
    token = bytes(range(8))
    assert turn.decode_reservation_token(turn.encode_reservation_token(token)) == token
    value = turn.encode_address_error_code(stun.FAMILY_IPV6, 440)
    assert value[:4] == b"\x02\x00\x04\x28"
    assert turn.decode_address_error_code(value) == (2, 440, "Address Family not Supported")
    assert turn.decode_address_error_code(turn.encode_address_error_code(1, 508, "x")) == (
        1,
        508,
        "x",
    )
    icmp = turn.encode_icmp(3, 4, 1400)
    assert icmp == b"\x00\x00\x06\x04\x00\x00\x05\x78"
    assert turn.decode_icmp(icmp) == turn.Icmp(3, 4, 1400)
    assert turn.decode_icmp(turn.encode_icmp(127, 511, 0xFFFFFFFF)) == (127, 511, 0xFFFFFFFF)


@pytest.mark.parametrize(
    ("decoder", "value"),
    [
        (turn.decode_channel_number, b"\x40\x01"),
        (turn.decode_lifetime, b"\x00\x00\x02"),
        (turn.decode_lifetime, bytes(8)),
        (turn.decode_even_port, b""),
        (turn.decode_even_port, bytes(4)),
        (turn.decode_address_family, b"\x01"),
        (turn.decode_requested_transport, b"\x11"),
        (turn.decode_reservation_token, bytes(4)),
        (turn.decode_address_error_code, b"\x01\x00\x04"),
        (turn.decode_address_error_code, b"\x01\x00\x09\x00"),
        (turn.decode_address_error_code, b"\x01\x00\x04\x00\xff"),
        (turn.decode_icmp, bytes(4)),
    ],
)
def test_bad_values_raise_stun_error(decoder: Callable[[bytes], object], value: bytes) -> None:
    with pytest.raises(stun.StunError):
        decoder(value)


def test_bad_values_to_encode() -> None:
    calls: list[Callable[[], object]] = [
        lambda: turn.encode_channel_number(0x10000),
        lambda: turn.encode_lifetime(-1),
        lambda: turn.encode_address_family(3),
        lambda: turn.encode_requested_transport(256),
        lambda: turn.encode_reservation_token(b"short"),
        lambda: turn.encode_address_error_code(3, 440),
        lambda: turn.encode_address_error_code(1, 200),
        lambda: turn.encode_icmp(128, 0),
        lambda: turn.encode_icmp(0, 512),
    ]
    for call in calls:
        with pytest.raises(stun.StunError):
            call()
