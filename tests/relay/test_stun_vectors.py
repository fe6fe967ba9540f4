"""The STUN codec against the RFC 5769 test vectors."""

from __future__ import annotations

import pytest

from relay.core.auth import long_term_key
from relay.proto import stun
from tests.relay import vectors as v

SHORT_KEY = v.SHORT_TERM_PASSWORD.encode()
PRIORITY, ICE_CONTROLLED = 0x0024, 0x8029

SHORT_TERM_VECTORS = {
    "2.1-request": v.SAMPLE_REQUEST,
    "2.2-ipv4-response": v.SAMPLE_IPV4_RESPONSE,
    "2.3-ipv6-response": v.SAMPLE_IPV6_RESPONSE,
}


def plain(message: stun.Message) -> list[tuple[int, bytes]]:
    computed = (stun.MESSAGE_INTEGRITY, stun.FINGERPRINT)
    return [(a.type, a.value) for a in message.attributes if a.type not in computed]


def zero_padding(data: bytes) -> bytes:
    """The message with every attribute's padding bytes set to zero (what our encoder writes)."""
    out = bytearray(data)
    pos = stun.HEADER_SIZE
    while pos < len(out):
        length = int.from_bytes(out[pos + 2 : pos + 4], "big")
        end = pos + 4 + length
        padded = end + (-length % 4)
        out[end:padded] = bytes(padded - end)
        pos = padded
    return bytes(out)


@pytest.mark.parametrize("data", SHORT_TERM_VECTORS.values(), ids=SHORT_TERM_VECTORS.keys())
def test_short_term_vectors_verify(data: bytes) -> None:
    assert stun.is_stun(data)
    message = stun.parse(data)
    assert message.transaction_id == v.TRANSACTION_ID
    assert message.method == stun.BINDING
    assert stun.verify_integrity(message, SHORT_KEY)
    assert stun.verify_integrity(data, SHORT_KEY)
    assert not stun.verify_integrity(message, b"VOkJxbRl1RmTxUk/WvJxBT")
    assert stun.verify_fingerprint(message)
    assert not stun.verify_integrity_sha256(message, SHORT_KEY)  # absent


@pytest.mark.parametrize("data", SHORT_TERM_VECTORS.values(), ids=SHORT_TERM_VECTORS.keys())
def test_any_flipped_bit_breaks_integrity_and_fingerprint(data: bytes) -> None:
    mi = stun.parse(data).find(stun.MESSAGE_INTEGRITY)
    assert mi is not None
    # Every byte the HMAC covers, except the length field, which parse() itself checks.
    for index in [*range(0, 2), *range(4, mi.offset)]:
        corrupted = bytearray(data)
        corrupted[index] ^= 0x01
        try:
            message = stun.parse(bytes(corrupted))
        except stun.StunError:
            continue
        assert not stun.verify_integrity(message, SHORT_KEY), index
        assert not stun.verify_fingerprint(message), index


@pytest.mark.parametrize("data", SHORT_TERM_VECTORS.values(), ids=SHORT_TERM_VECTORS.keys())
def test_short_term_vectors_reencode(data: bytes) -> None:
    """Byte-exact up to the integrity attribute once the RFC's 0x20 padding is zeroed; the
    recomputed MESSAGE-INTEGRITY and FINGERPRINT verify."""
    message = stun.parse(data)
    encoded = message.encode(integrity_key=SHORT_KEY, fingerprint=True)
    assert len(encoded) == len(data)
    mi = message.find(stun.MESSAGE_INTEGRITY)
    assert mi is not None
    assert encoded[: mi.offset + 4] == zero_padding(data)[: mi.offset + 4]
    again = stun.parse(encoded)
    assert plain(again) == plain(message)
    assert stun.verify_integrity(again, SHORT_KEY)
    assert stun.verify_fingerprint(again)


def test_sample_request_attributes() -> None:
    message = stun.parse(v.SAMPLE_REQUEST)
    assert message.cls is stun.MessageClass.REQUEST
    assert [a.type for a in message.attributes] == [
        stun.SOFTWARE,
        PRIORITY,
        ICE_CONTROLLED,
        stun.USERNAME,
        stun.MESSAGE_INTEGRITY,
        stun.FINGERPRINT,
    ]
    assert message.get_text(stun.SOFTWARE) == "STUN test client"
    assert message.get_text(stun.USERNAME) == "evtj:h6vY"
    assert message.get(PRIORITY) == bytes.fromhex("6e0001ff")
    assert message.get(ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    # PRIORITY is comprehension-required and not STUN's: a STUN server would answer 420.
    assert message.unknown_comprehension_required(stun.STUN_ATTRIBUTES) == (PRIORITY,)


@pytest.mark.parametrize(
    ("data", "host"),
    [
        (v.SAMPLE_IPV4_RESPONSE, "192.0.2.1"),
        (v.SAMPLE_IPV6_RESPONSE, "2001:db8:1234:5678:11:2233:4455:6677"),
    ],
    ids=["2.2-ipv4", "2.3-ipv6"],
)
def test_sample_responses_map_the_address(data: bytes, host: str) -> None:
    message = stun.parse(data)
    assert message.cls is stun.MessageClass.SUCCESS
    assert message.get_text(stun.SOFTWARE) == "test vector"
    assert message.get_xor_address() == stun.TransportAddress(host, 32853)
    assert stun.encode_xor_address(host, 32853, v.TRANSACTION_ID) == message.get(
        stun.XOR_MAPPED_ADDRESS
    )
    assert message.unknown_comprehension_required(stun.STUN_ATTRIBUTES) == ()


def test_long_term_vector() -> None:
    data = v.SAMPLE_LONG_TERM_REQUEST
    message = stun.parse(data)
    assert message.method == stun.BINDING
    assert message.cls is stun.MessageClass.REQUEST
    assert message.get_text(stun.USERNAME) == v.LONG_TERM_USERNAME
    assert message.get_text(stun.NONCE) == v.LONG_TERM_NONCE
    assert message.get_text(stun.REALM) == v.LONG_TERM_REALM
    key = long_term_key(v.LONG_TERM_USERNAME, v.LONG_TERM_REALM, v.LONG_TERM_PASSWORD)
    assert key == bytes.fromhex("e8ca7ad59d5eb0518e312911d2dab2a9")
    assert stun.verify_integrity(message, key)
    assert not stun.verify_integrity(message, long_term_key("x", "example.org", "TheMatrIX"))
    assert not stun.verify_fingerprint(message)  # this vector has none


def test_long_term_vector_reencodes_byte_exact() -> None:
    key = long_term_key(v.LONG_TERM_USERNAME, v.LONG_TERM_REALM, v.LONG_TERM_PASSWORD)
    tid = bytes.fromhex("78ad3433c6ad72c029da412e")
    built = (
        stun.MessageBuilder(stun.BINDING, stun.MessageClass.REQUEST, tid)
        .add_text(stun.USERNAME, v.LONG_TERM_USERNAME)
        .add_text(stun.NONCE, v.LONG_TERM_NONCE)
        .add_text(stun.REALM, v.LONG_TERM_REALM)
        .encode(integrity_key=key)
    )
    assert built == v.SAMPLE_LONG_TERM_REQUEST
    # A parsed message re-encodes to the same bytes: the integrity is recomputed, not copied.
    assert stun.parse(built).encode(integrity_key=key) == v.SAMPLE_LONG_TERM_REQUEST
