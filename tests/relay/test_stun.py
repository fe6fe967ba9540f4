"""STUN codec: header, attributes, integrity rules, strictness, and fuzzing."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.proto import stun
from tests.relay import vectors as v

TID = bytes(range(12))
KEY = b"a key"
COMPUTED = {stun.MESSAGE_INTEGRITY, stun.MESSAGE_INTEGRITY_SHA256, stun.FINGERPRINT}


def request(method: int = stun.BINDING) -> stun.MessageBuilder:
    return stun.MessageBuilder(method, stun.MessageClass.REQUEST, TID)


def append_raw(data: bytes, extra: bytes) -> bytes:
    """``data`` followed by ``extra``, with the header length field fixed."""
    out = bytearray(data + extra)
    struct.pack_into("!H", out, 2, len(out) - stun.HEADER_SIZE)
    return bytes(out)


def append_attribute(data: bytes, attr_type: int, value: bytes) -> bytes:
    """``data`` with one more attribute at the end and the length field fixed."""
    return append_raw(
        data, struct.pack("!HH", attr_type, len(value)) + value + bytes(-len(value) % 4)
    )


# --- header --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "cls", "expected"),
    [
        (0x001, stun.MessageClass.REQUEST, 0x0001),
        (0x001, stun.MessageClass.INDICATION, 0x0011),
        (0x001, stun.MessageClass.SUCCESS, 0x0101),
        (0x001, stun.MessageClass.ERROR, 0x0111),
        (0x003, stun.MessageClass.REQUEST, 0x0003),
        (0x003, stun.MessageClass.SUCCESS, 0x0103),
        (0x003, stun.MessageClass.ERROR, 0x0113),
        (0x006, stun.MessageClass.INDICATION, 0x0016),
        (0x007, stun.MessageClass.INDICATION, 0x0017),
        (0x009, stun.MessageClass.REQUEST, 0x0009),
        (0xFFF, stun.MessageClass.ERROR, 0x3FFF),
        (0xFFF, stun.MessageClass.REQUEST, 0x3EEF),
    ],
)
def test_message_type_interleaving(method: int, cls: stun.MessageClass, expected: int) -> None:
    assert stun.message_type(method, cls) == expected
    assert stun.split_message_type(expected) == (method, cls)


def test_message_type_round_trips_for_every_method_and_class() -> None:
    seen = set()
    for method in range(0x1000):
        for cls in stun.MessageClass:
            t = stun.message_type(method, cls)
            assert t < 0x4000
            assert stun.split_message_type(t) == (method, cls)
            seen.add(t)
    assert len(seen) == 0x4000


def test_method_out_of_range() -> None:
    with pytest.raises(stun.StunError):
        stun.message_type(0x1000, stun.MessageClass.REQUEST)
    with pytest.raises(stun.StunError):
        stun.Message(0x1000, stun.MessageClass.REQUEST, TID)
    with pytest.raises(stun.StunError):
        stun.Message(1, stun.MessageClass.REQUEST, b"short")
    with pytest.raises(stun.StunError):
        stun.MessageBuilder(1, stun.MessageClass.REQUEST, b"short")


def test_builder_defaults_to_random_transaction_ids() -> None:
    a = stun.MessageBuilder(stun.BINDING, stun.MessageClass.REQUEST)
    b = stun.MessageBuilder(stun.BINDING, stun.MessageClass.REQUEST)
    assert len(a.transaction_id) == 12
    assert a.transaction_id != b.transaction_id


def test_empty_message_layout() -> None:
    data = request().encode()
    assert data == bytes.fromhex("0001 0000 2112a442") + TID
    assert stun.parse(data) == stun.Message(stun.BINDING, stun.MessageClass.REQUEST, TID)


# --- encode / parse ------------------------------------------------------------------------------


def test_round_trip_with_every_protection() -> None:
    builder = (
        request(0x003)
        .add_text(stun.USERNAME, "alice")
        .add(0x0019, bytes([17, 0, 0, 0]))
        .add(0x0013, b"hello")
    )
    data = builder.encode(integrity_key=KEY, integrity_sha256_key=KEY, fingerprint=True)
    message = stun.parse(data)
    assert [a.type for a in message.attributes] == [
        stun.USERNAME,
        0x0019,
        0x0013,
        stun.MESSAGE_INTEGRITY,
        stun.MESSAGE_INTEGRITY_SHA256,
        stun.FINGERPRINT,
    ]
    assert message.get(0x0013) == b"hello"
    assert stun.verify_integrity(message, KEY)
    assert stun.verify_integrity_sha256(message, KEY)
    assert stun.verify_fingerprint(message)
    assert not stun.verify_integrity(message, b"other")
    assert not stun.verify_integrity_sha256(message, b"other")
    # Padding: "hello" is 5 bytes, followed by 3 zero bytes.
    data_attr = message.find(0x0013)
    assert data_attr is not None
    assert data[data_attr.offset + 9 : data_attr.offset + 12] == b"\x00\x00\x00"
    assert tuple(a for a in message.attributes if a.type not in COMPUTED) == (
        builder.build().attributes
    )


def test_encode_never_copies_computed_attributes() -> None:
    message = stun.parse(v.SAMPLE_REQUEST)
    bare = stun.parse(message.encode())
    assert not bare.has(stun.MESSAGE_INTEGRITY)
    assert not bare.has(stun.FINGERPRINT)
    assert len(bare.attributes) == len(message.attributes) - 2


def test_unparsed_messages_do_not_verify() -> None:
    message = request().add_text(stun.USERNAME, "a").build()
    assert not stun.verify_integrity(message, KEY)
    assert not stun.verify_fingerprint(message)
    assert not stun.verify_integrity(stun.parse(request().encode()), KEY)


def test_attributes_after_message_integrity_are_ignored() -> None:
    signed = request(0x003).add(0x000D, bytes(4)).encode(integrity_key=KEY)
    tampered = append_attribute(signed, 0x0013, b"evil")
    message = stun.parse(tampered)
    assert not message.has(0x0013)
    assert [a.type for a in message.attributes] == [0x000D, stun.MESSAGE_INTEGRITY]
    assert stun.verify_integrity(message, KEY)
    # ...and are not reported as unknown comprehension-required attributes either.
    assert message.unknown_comprehension_required(stun.STUN_ATTRIBUTES) == (0x000D,)


def test_only_sha256_and_fingerprint_may_follow_message_integrity() -> None:
    data = request().encode(integrity_key=KEY, integrity_sha256_key=KEY, fingerprint=True)
    message = stun.parse(data)
    assert [a.type for a in message.attributes] == [
        stun.MESSAGE_INTEGRITY,
        stun.MESSAGE_INTEGRITY_SHA256,
        stun.FINGERPRINT,
    ]
    # A second MESSAGE-INTEGRITY after MESSAGE-INTEGRITY-SHA256 is ignored.
    data = request().encode(integrity_sha256_key=KEY)
    message = stun.parse(append_attribute(data, stun.MESSAGE_INTEGRITY, bytes(20)))
    assert [a.type for a in message.attributes] == [stun.MESSAGE_INTEGRITY_SHA256]
    assert stun.verify_integrity_sha256(message, KEY)
    assert not stun.verify_integrity(message, KEY)


def test_attributes_after_fingerprint_are_ignored_and_spoil_it() -> None:
    data = append_attribute(request().encode(fingerprint=True), stun.SOFTWARE, b"late")
    message = stun.parse(data)
    assert [a.type for a in message.attributes] == [stun.FINGERPRINT]
    assert not stun.verify_fingerprint(message)


def test_truncated_sha256_integrity_is_verified() -> None:
    full = request().add_text(stun.REALM, "r").encode(integrity_sha256_key=KEY)
    # Rebuild with a 16-byte MESSAGE-INTEGRITY-SHA256 (the minimum, §14.6) by hand.
    body = bytearray(full[: -(4 + 32)])
    struct.pack_into("!H", body, 2, len(body) + 4 + 16 - stun.HEADER_SIZE)
    mac = hmac.new(KEY, bytes(body), hashlib.sha256).digest()[:16]
    data = bytes(body) + struct.pack("!HH", stun.MESSAGE_INTEGRITY_SHA256, 16) + mac
    assert stun.verify_integrity_sha256(data, KEY)
    assert not stun.verify_integrity_sha256(data[:-1] + bytes([data[-1] ^ 1]), KEY)


def test_unknown_comprehension_required() -> None:
    message = stun.parse(
        request()
        .add(0x0003, bytes(4))  # CHANGE-REQUEST (RFC 5780): required, not understood
        .add(0x8030, b"x")  # comprehension-optional: never reported
        .add(0x7FFF, b"")
        .add(0x0003, bytes(4))
        .add_text(stun.USERNAME, "u")
        .encode()
    )
    assert message.unknown_comprehension_required(stun.STUN_ATTRIBUTES) == (0x0003, 0x7FFF)
    assert message.unknown_comprehension_required(range(0x10000)) == ()


def test_first_occurrence_wins() -> None:
    message = stun.parse(request().add_text(stun.REALM, "a").add_text(stun.REALM, "b").encode())
    assert message.get_text(stun.REALM) == "a"
    assert message.get_all(stun.REALM) == [b"a", b"b"]


def test_success_and_error_builders() -> None:
    req = stun.parse(request(0x003).encode())
    ok = stun.parse(stun.MessageBuilder.success(req).encode())
    assert (ok.method, ok.cls, ok.transaction_id) == (0x003, stun.MessageClass.SUCCESS, TID)
    err = stun.parse(stun.MessageBuilder.error(req, 420).add_unknown_attributes([3, 5]).encode())
    assert err.cls is stun.MessageClass.ERROR
    assert err.get_error_code() == stun.ErrorCode(420, "Unknown Attribute")
    assert err.get_unknown_attributes() == (3, 5)
    custom = stun.parse(stun.MessageBuilder.error(req, 499, "Odd").encode())
    assert custom.get_error_code() == (499, "Odd")
    with pytest.raises(stun.StunError, match="reason"):
        stun.MessageBuilder.error(req, 499)


# --- attribute values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("203.0.113.7", 1),
        ("0.0.0.0", 0),
        ("2001:db8::1", 65535),
        ("::", 3478),
        ("::ffff:192.0.2.9", 9),
        ("fe80::1:2:3:4", 7),
    ],
)
def test_address_round_trips(host: str, port: int) -> None:
    expected = stun.TransportAddress(str(ipaddress.ip_address(host)), port)
    assert stun.decode_address(stun.encode_address(host, port)) == expected
    assert stun.decode_xor_address(stun.encode_xor_address(host, port, TID), TID) == expected
    built = request().add_xor_address(0x0012, host, port).add_address(0x0001, host, port)
    message = stun.parse(built.encode())
    assert message.get_xor_address(0x0012) == expected
    assert message.get_xor_addresses(0x0012) == [expected]
    assert message.get_address() == expected


@given(st.ip_addresses(v=4), st.integers(0, 0xFFFF), st.binary(min_size=12, max_size=12))
def test_ipv4_xor_address_is_the_same_from_text_or_object(
    ip: ipaddress.IPv4Address, port: int, tid: bytes
) -> None:
    """RFC 8489 §14.2's bytes: X-Port and X-Address XORed with the magic cookie, whichever
    form the address comes in (the relay passes the text a socket reports)."""
    expected = struct.pack("!BBHI", 0, stun.FAMILY_IPV4, port ^ 0x2112, int(ip) ^ 0x2112A442)
    assert stun.encode_xor_address(str(ip), port, tid) == expected
    assert stun.encode_xor_address(ip, port, tid) == expected
    assert stun.decode_xor_address(expected, tid) == (str(ip), port)


@pytest.mark.parametrize(
    "host",
    [
        "192.0.2.01",
        "192.0.2",
        "192.0.2.1.5",
        "256.0.0.1",
        "192.0.2.1 ",
        "",
        "192.0.2.1\x00",
        "0x7f.0.0.1",
    ],
)
def test_malformed_ipv4_text_is_refused_by_xor_encoding(host: str) -> None:
    with pytest.raises(stun.StunError):
        stun.encode_xor_address(host, 1, TID)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00\x01\x00",
        b"\x00\x01\x00\x00\x01\x02\x03",  # IPv4, 3 address bytes
        b"\x00\x01\x00\x00" + bytes(5),  # IPv4, 5 address bytes
        b"\x00\x02\x00\x00" + bytes(4),  # IPv6, 4 address bytes
        b"\x00\x03\x00\x00" + bytes(4),  # unknown family
    ],
)
def test_bad_address_values(value: bytes) -> None:
    with pytest.raises(stun.StunError):
        stun.decode_address(value)
    with pytest.raises(stun.StunError):
        stun.decode_xor_address(value, TID)


def test_bad_values_to_encode() -> None:
    with pytest.raises(stun.StunError):
        stun.encode_address("not-an-ip", 1)
    with pytest.raises(stun.StunError):
        stun.encode_xor_address("192.0.2.1", 70000, TID)
    with pytest.raises(stun.StunError):
        stun.encode_xor_address("::1", 1, b"short")
    with pytest.raises(stun.StunError):
        stun.encode_error_code(200, "OK")
    with pytest.raises(stun.StunError):
        stun.encode_text("x" * 510)
    with pytest.raises(stun.StunError):
        stun.encode_unknown_attributes([0x10000])
    with pytest.raises(stun.StunError):
        request().add(0x10000, b"")
    with pytest.raises(stun.StunError):
        request().add(0x0013, bytes(0x10000)).encode()
    with pytest.raises(stun.StunError):  # each attribute fits, the message does not
        request().add(0x0013, bytes(0xFFFF)).add(0x0013, b"x").encode()


def test_error_code_values() -> None:
    assert stun.encode_error_code(438, "Stale Nonce") == b"\x00\x00\x04\x26Stale Nonce"
    assert stun.decode_error_code(b"\x00\x00\x04\x26Stale Nonce") == (438, "Stale Nonce")
    assert stun.decode_error_code(b"\xff\xff\xfd\x00") == (500, "")  # reserved bits ignored
    for bad in [b"\x00\x00\x04", b"\x00\x00\x02\x00", b"\x00\x00\x07\x00", b"\x00\x00\x04\x64"]:
        with pytest.raises(stun.StunError):
            stun.decode_error_code(bad)
    with pytest.raises(stun.StunError):
        stun.decode_error_code(b"\x00\x00\x04\x00\xff")


def test_text_values() -> None:
    assert stun.decode_text("é".encode()) == "é"
    with pytest.raises(stun.StunError):
        stun.decode_text(b"\xc3")
    with pytest.raises(stun.StunError):
        stun.decode_text(b"x" * 764)
    message = stun.parse(request().add(stun.USERNAME, b"\xff").encode())
    with pytest.raises(stun.StunError):
        message.get_text(stun.USERNAME)
    assert message.get_text(stun.REALM) is None


def test_unknown_attributes_values() -> None:
    assert stun.decode_unknown_attributes(b"") == ()
    assert stun.decode_unknown_attributes(b"\x00\x03\x80\x30") == (3, 0x8030)
    with pytest.raises(stun.StunError):
        stun.decode_unknown_attributes(b"\x00")


# --- strictness ----------------------------------------------------------------------------------

GOOD = request().add_text(stun.SOFTWARE, "abc").encode()


def mutate(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        GOOD[:19],
        GOOD[:-1],
        GOOD + b"\x00\x00\x00\x00",  # trailing bytes
        mutate(GOOD, 0, b"\x80"),  # leading bits 10
        mutate(GOOD, 0, b"\x40"),  # leading bits 01 (ChannelData)
        mutate(GOOD, 4, b"\x21\x12\xa4\x43"),  # cookie
        mutate(GOOD, 2, b"\x00\x09"),  # length not a multiple of 4
        mutate(GOOD, 2, b"\x00\x04"),  # header length cuts an attribute
        mutate(GOOD, 22, b"\x00\x09"),  # attribute overruns the message
        mutate(GOOD, 22, b"\x00\x05"),  # padding overruns the message
        append_attribute(GOOD, stun.MESSAGE_INTEGRITY, bytes(19)),
        append_attribute(GOOD, stun.MESSAGE_INTEGRITY_SHA256, bytes(12)),
        append_attribute(GOOD, stun.MESSAGE_INTEGRITY_SHA256, bytes(36)),
        append_attribute(GOOD, stun.MESSAGE_INTEGRITY_SHA256, bytes(18)),
        append_attribute(GOOD, stun.FINGERPRINT, bytes(8)),
        append_raw(GOOD, b"\x80\x22\x00\x04"),  # attribute header without its value
    ],
)
def test_malformed_messages_raise_stun_error(data: bytes) -> None:
    assert isinstance(stun.StunError("x"), ValueError)
    with pytest.raises(stun.StunError):
        stun.parse(data)


def test_parse_accepts_buffers() -> None:
    assert stun.parse(bytearray(GOOD)) == stun.parse(memoryview(GOOD)) == stun.parse(GOOD)


def test_is_stun() -> None:
    assert stun.is_stun(GOOD)
    assert stun.is_stun(v.SAMPLE_IPV6_RESPONSE)
    assert not stun.is_stun(GOOD[:19])
    assert not stun.is_stun(b"\x40\x00\x00\x10" + bytes(16))  # ChannelData
    assert not stun.is_stun(mutate(GOOD, 4, b"\x00\x00\x00\x00"))
    assert not stun.is_stun(mutate(GOOD, 3, b"\x02"))


# --- fuzzing -------------------------------------------------------------------------------------

SEEDS = [
    v.SAMPLE_REQUEST,
    v.SAMPLE_IPV4_RESPONSE,
    v.SAMPLE_IPV6_RESPONSE,
    v.SAMPLE_LONG_TERM_REQUEST,
    request(0x003)
    .add(0x0009, b"\x00\x00\x04\x26Stale")
    .add(0x000A, b"\x00\x03\x00")
    .add(0x0001, b"\x00\x01\x00\x01\x7f\x00\x00\x01")
    .encode(integrity_key=KEY, integrity_sha256_key=KEY, fingerprint=True),
]


def swallow(fn: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(stun.StunError):
        fn(*args)


def exercise(data: bytes) -> None:
    """Parse and read everything; only StunError may come out."""
    try:
        message = stun.parse(data)
    except stun.StunError:
        return
    stun.is_stun(data)
    for verify in (stun.verify_integrity, stun.verify_integrity_sha256):
        verify(message, KEY)
    stun.verify_fingerprint(message)
    message.unknown_comprehension_required(stun.STUN_ATTRIBUTES)
    for attr in message.attributes:
        assert 0 <= attr.offset < len(message.raw)
        swallow(message.get_text, attr.type)
        swallow(message.get_address, attr.type)
        swallow(message.get_xor_address, attr.type)
        swallow(message.get_xor_addresses, attr.type)
        swallow(stun.decode_error_code, attr.value)
        swallow(stun.decode_unknown_attributes, attr.value)
    swallow(message.get_error_code)
    swallow(message.get_unknown_attributes)


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    exercise(data)


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=120).map(lambda body: body[: len(body) // 4 * 4]))
def test_fuzz_valid_header_random_body(body: bytes) -> None:
    header = struct.pack("!HHI", 0x0001, len(body), stun.MAGIC_COOKIE) + TID
    exercise(header + body)


@settings(deadline=None, max_examples=500)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 200),
)
def test_fuzz_mutated_messages(seed: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for index, value in edits:
        data[index % len(data)] = value
    exercise(bytes(data))
    exercise(bytes(data[: cut % (len(data) + 1)]))


attribute_types = st.integers(0, 0xFFFF).filter(lambda t: t not in COMPUTED)


headers = st.tuples(
    st.integers(0, 0xFFF),
    st.sampled_from(list(stun.MessageClass)),
    st.binary(min_size=12, max_size=12),
)
keys = st.one_of(st.none(), st.binary(min_size=1, max_size=40))


@settings(deadline=None, max_examples=200)
@given(
    headers,
    st.lists(st.tuples(attribute_types, st.binary(max_size=70)), max_size=8),
    st.tuples(keys, keys, st.booleans()),
)
def test_round_trip_generated_messages(
    header: tuple[int, stun.MessageClass, bytes],
    attributes: list[tuple[int, bytes]],
    protection: tuple[bytes | None, bytes | None, bool],
) -> None:
    method, cls, tid = header
    key, key256, fingerprint = protection
    builder = stun.MessageBuilder(method, cls, tid)
    for attr_type, value in attributes:
        builder.add(attr_type, value)
    data = builder.encode(integrity_key=key, integrity_sha256_key=key256, fingerprint=fingerprint)
    assert len(data) % 4 == 0
    assert stun.is_stun(data)
    message = stun.parse(data)
    plain = tuple(a for a in message.attributes if a.type not in COMPUTED)
    assert plain == builder.build().attributes
    assert (message.method, message.cls, message.transaction_id) == (method, cls, tid)
    assert stun.verify_integrity(message, key) if key else not message.has(stun.MESSAGE_INTEGRITY)
    if key256:
        assert stun.verify_integrity_sha256(message, key256)
    assert stun.verify_fingerprint(message) is fingerprint
