"""STUN message codec (RFC 8489), sans-I/O: bytes in, values out, and back.

What is implemented, by section of RFC 8489:

* §5 / §6: the 20-byte header: the two leading zero bits, the 14-bit message type with the
  class bits (C1, C0) interleaved into the 12 method bits, the message length (a multiple of 4,
  header excluded), the magic cookie ``0x2112A442`` and the 96-bit transaction ID.
* §14: attributes as type-length-value, each value padded to a 4-byte boundary (padding bytes
  are ignored when decoding and written as zeros when encoding). Raw values are kept with their
  offset in the received bytes, so integrity is always checked against what was on the wire.
* §14.1 MAPPED-ADDRESS, §14.2 XOR-MAPPED-ADDRESS (also the layout of TURN's XOR-PEER-ADDRESS
  and XOR-RELAYED-ADDRESS), §14.3 USERNAME, §14.8 ERROR-CODE, §14.9 REALM, §14.10 NONCE,
  §14.13 UNKNOWN-ATTRIBUTES, §14.14 SOFTWARE, §14.15 ALTERNATE-SERVER.
* §14.5 MESSAGE-INTEGRITY (HMAC-SHA1) and §14.6 MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256,
  truncated to 16..32 bytes): the HMAC covers the message up to the attribute, with the header
  length rewritten to end just after it. Attributes after MESSAGE-INTEGRITY other than
  MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and after MESSAGE-INTEGRITY-SHA256 other than
  FINGERPRINT, are ignored; so is anything after FINGERPRINT (§14.7: it comes last).
* §14.7 FINGERPRINT: CRC-32 (``zlib.crc32``) of the message up to the attribute, XOR
  ``0x5354554E``.
* §7.3.1: comprehension-required attributes (type < 0x8000) that the caller does not know are
  reported by :meth:`Message.unknown_comprehension_required`, for a 420 answer carrying
  UNKNOWN-ATTRIBUTES.

Decoding is strict and total: :func:`parse` and every ``Message.get_*`` accessor raise
:class:`StunError` (a :class:`ValueError`) for malformed input, and nothing else.

Not implemented: the RFC 3489 "classic STUN" format (no magic cookie), USERHASH,
PASSWORD-ALGORITHM(S) and ALTERNATE-DOMAIN (their types are defined, their values are not
interpreted).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
import struct
import zlib
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, NamedTuple

__all__ = [
    "ALTERNATE_DOMAIN",
    "ALTERNATE_SERVER",
    "BINDING",
    "ERROR_CODE",
    "ERROR_REASONS",
    "FAMILY_IPV4",
    "FAMILY_IPV6",
    "FINGERPRINT",
    "FINGERPRINT_XOR",
    "HEADER_SIZE",
    "MAGIC_COOKIE",
    "MAPPED_ADDRESS",
    "MAX_MESSAGE_SIZE",
    "MAX_TEXT_DECODE",
    "MAX_TEXT_ENCODE",
    "MAX_USERNAME",
    "MESSAGE_INTEGRITY",
    "MESSAGE_INTEGRITY_SHA256",
    "NONCE",
    "PADDING",
    "PASSWORD_ALGORITHM",
    "PASSWORD_ALGORITHMS",
    "REALM",
    "SOFTWARE",
    "STUN_ATTRIBUTES",
    "TRANSACTION_ID_SIZE",
    "UNKNOWN_ATTRIBUTES",
    "USERHASH",
    "USERNAME",
    "XOR_MAPPED_ADDRESS",
    "Attribute",
    "ErrorCode",
    "Message",
    "MessageBuilder",
    "MessageClass",
    "StunError",
    "TransportAddress",
    "decode_address",
    "decode_error_code",
    "decode_text",
    "decode_unknown_attributes",
    "decode_xor_address",
    "encode_address",
    "encode_error_code",
    "encode_text",
    "encode_unknown_attributes",
    "encode_xor_address",
    "is_stun",
    "message_type",
    "parse",
    "split_message_type",
    "verify_fingerprint",
    "verify_integrity",
    "verify_integrity_sha256",
]


class StunError(ValueError):
    """Malformed STUN/TURN input (or an impossible value to encode). The only error raised."""


# --- header (RFC 8489 §5, §6) ----------------------------------------------------------------

MAGIC_COOKIE: Final = 0x2112A442
_COOKIE_BYTES: Final = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_SIZE: Final = 20
TRANSACTION_ID_SIZE: Final = 12
#: The length field is 16 bits and a multiple of 4.
MAX_MESSAGE_SIZE: Final = HEADER_SIZE + 0xFFFC
FINGERPRINT_XOR: Final = 0x5354554E

_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")
_U32 = struct.Struct("!I")
#: Zero bytes to pad a value to a 4-byte boundary, by how many are missing (``-length & 3``):
#: attribute values (§14), and ChannelData over TCP (RFC 8656 §12.5).
PADDING: Final = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")


class MessageClass(IntEnum):
    """The two class bits of the message type (RFC 8489 §5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


#: Each class by its two bits: an index is cheaper than ``MessageClass(bits)`` per message.
_CLASSES: Final = tuple(MessageClass(bits) for bits in range(4))


#: The only method STUN itself defines (RFC 8489 §18.2); TURN's are in :mod:`relay.proto.turn`.
BINDING: Final = 0x001


def message_type(method: int, cls: MessageClass) -> int:
    """Interleave a 12-bit method and a class into the 14-bit message type (RFC 8489 §5).

    Bits: ``M11..M7 C1 M6..M4 C0 M3..M0``.
    """
    if not 0 <= method <= 0xFFF:
        raise StunError(f"STUN method {method:#x} does not fit in 12 bits")
    c = int(cls)
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
    )


def split_message_type(msg_type: int) -> tuple[int, MessageClass]:
    """Inverse of :func:`message_type`: ``(method, class)`` of a 14-bit message type."""
    method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)
    cls = ((msg_type >> 4) & 0b01) | ((msg_type >> 7) & 0b10)
    return method, _CLASSES[cls]


# --- attribute types (RFC 8489 §18.3) ----------------------------------------------------------

MAPPED_ADDRESS: Final = 0x0001
USERNAME: Final = 0x0006
MESSAGE_INTEGRITY: Final = 0x0008
ERROR_CODE: Final = 0x0009
UNKNOWN_ATTRIBUTES: Final = 0x000A
REALM: Final = 0x0014
NONCE: Final = 0x0015
MESSAGE_INTEGRITY_SHA256: Final = 0x001C
PASSWORD_ALGORITHM: Final = 0x001D
USERHASH: Final = 0x001E
XOR_MAPPED_ADDRESS: Final = 0x0020
PASSWORD_ALGORITHMS: Final = 0x8002
ALTERNATE_DOMAIN: Final = 0x8003
SOFTWARE: Final = 0x8022
ALTERNATE_SERVER: Final = 0x8023
FINGERPRINT: Final = 0x8028

#: The STUN attributes this codec understands. PASSWORD-ALGORITHM and USERHASH are left out on
#: purpose: they are comprehension-required and not supported, so a request carrying them is
#: answered 420 rather than silently misread.
STUN_ATTRIBUTES: Final = frozenset(
    {
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        REALM,
        NONCE,
        MESSAGE_INTEGRITY_SHA256,
        XOR_MAPPED_ADDRESS,
        SOFTWARE,
        ALTERNATE_SERVER,
        FINGERPRINT,
    }
)

#: Attributes computed by the encoder, never copied from a message's attribute list.
_COMPUTED: Final = frozenset({MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256, FINGERPRINT})

_MI_SIZE: Final = 20
_MI256_MIN, _MI256_MAX = 16, 32
_FINGERPRINT_SIZE: Final = 4

#: Reason phrases of the STUN error codes (RFC 8489 §14.8); TURN adds its own in
#: :mod:`relay.proto.turn`.
ERROR_REASONS: Final[dict[int, str]] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    420: "Unknown Attribute",
    438: "Stale Nonce",
    500: "Server Error",
}

#: Address families of (XOR-)MAPPED-ADDRESS (RFC 8489 §14.1).
FAMILY_IPV4: Final = 0x01
FAMILY_IPV6: Final = 0x02

#: Decoders accept text up to this many bytes: "fewer than 128 characters (which can be as long
#: as 509 bytes when encoding them and as long as 763 bytes when decoding them)" (§14.9).
MAX_TEXT_DECODE: Final = 763
MAX_TEXT_ENCODE: Final = 509
#: USERNAME: "fewer than 509 bytes" (§14.3).
MAX_USERNAME: Final = 508


# --- values ------------------------------------------------------------------------------------


class TransportAddress(NamedTuple):
    """An IP address (canonical text form) and a port, usable as an asyncio ``(host, port)``."""

    host: str
    port: int


class ErrorCode(NamedTuple):
    """A decoded ERROR-CODE (RFC 8489 §14.8)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute as found on the wire: its type and raw (unpadded) value.

    ``offset`` is where the attribute header starts in :attr:`Message.raw` (``-1`` for an
    attribute that was not parsed). It is ignored by equality.
    """

    type: int
    value: bytes
    offset: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class Message:
    """A STUN message: method, class, transaction ID and attributes in wire order.

    Messages from :func:`parse` keep the received bytes in ``raw`` (ignored by equality) so that
    :func:`verify_integrity` and :func:`verify_fingerprint` check exactly what was sent.
    Attributes that RFC 8489 says to ignore (after MESSAGE-INTEGRITY etc.) are not listed.
    """

    method: int
    cls: MessageClass
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()
    raw: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.transaction_id) != TRANSACTION_ID_SIZE:
            raise StunError("a STUN transaction ID is 12 bytes")
        if not 0 <= self.method <= 0xFFF:
            raise StunError(f"STUN method {self.method:#x} does not fit in 12 bits")

    # -- raw access

    def get(self, attr_type: int) -> bytes | None:
        """The raw value of the first attribute of this type (RFC 8489 §14: first one wins)."""
        for attr in self.attributes:
            if attr.type == attr_type:
                return attr.value
        return None

    def get_all(self, attr_type: int) -> list[bytes]:
        """The raw values of every attribute of this type, in order."""
        return [a.value for a in self.attributes if a.type == attr_type]

    def has(self, attr_type: int) -> bool:
        """Whether an attribute of this type is present (and not ignored)."""
        return self.find(attr_type) is not None  # find's plain loop: cheaper than a generator

    def find(self, attr_type: int) -> Attribute | None:
        """The first :class:`Attribute` of this type, with its offset in :attr:`raw`."""
        for attr in self.attributes:
            if attr.type == attr_type:
                return attr
        return None

    # -- typed access (each raises StunError for a malformed value, None when absent)

    def get_text(self, attr_type: int, max_bytes: int = MAX_TEXT_DECODE) -> str | None:
        """A UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE...)."""
        value = self.get(attr_type)
        return None if value is None else decode_text(value, max_bytes)

    def get_address(self, attr_type: int = MAPPED_ADDRESS) -> TransportAddress | None:
        """A plain address attribute (MAPPED-ADDRESS, ALTERNATE-SERVER)."""
        value = self.get(attr_type)
        return None if value is None else decode_address(value)

    def get_xor_address(self, attr_type: int = XOR_MAPPED_ADDRESS) -> TransportAddress | None:
        """An XOR-encoded address (XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS)."""
        value = self.get(attr_type)
        return None if value is None else decode_xor_address(value, self.transaction_id)

    def get_xor_addresses(self, attr_type: int) -> list[TransportAddress]:
        """Every XOR address of this type (CreatePermission may carry several peers)."""
        return [decode_xor_address(v, self.transaction_id) for v in self.get_all(attr_type)]

    def get_error_code(self) -> ErrorCode | None:
        """The ERROR-CODE attribute."""
        value = self.get(ERROR_CODE)
        return None if value is None else decode_error_code(value)

    def get_unknown_attributes(self) -> tuple[int, ...] | None:
        """The UNKNOWN-ATTRIBUTES attribute."""
        value = self.get(UNKNOWN_ATTRIBUTES)
        return None if value is None else decode_unknown_attributes(value)

    def unknown_comprehension_required(self, known: Container[int]) -> tuple[int, ...]:
        """Comprehension-required types (< 0x8000) not in ``known``, each once, in order.

        A server answers a request with any of these with 420 and UNKNOWN-ATTRIBUTES listing
        them (RFC 8489 §6.3.1.1, §7.3.1).
        """
        seen: list[int] = []
        for attr in self.attributes:
            t = attr.type
            if t < 0x8000 and t not in known and t not in seen:
                seen.append(t)
        return tuple(seen)

    # -- encoding

    def encode(
        self,
        *,
        integrity_key: bytes | None = None,
        integrity_sha256_key: bytes | None = None,
        fingerprint: bool = False,
    ) -> bytes:
        """Serialise; optionally append MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT.

        Those three are always computed here and never copied from :attr:`attributes` (so a
        parsed message re-encodes with fresh ones, or none). Padding is written as zeros.
        """
        return _encode(
            self.method,
            self.cls,
            self.transaction_id,
            [(attr.type, attr.value) for attr in self.attributes],
            integrity_key=integrity_key,
            integrity_sha256_key=integrity_sha256_key,
            fingerprint=fingerprint,
        )


def _encode(
    method: int,
    cls: MessageClass,
    transaction_id: bytes,
    attributes: Iterable[tuple[int, bytes]],
    *,
    integrity_key: bytes | None,
    integrity_sha256_key: bytes | None,
    fingerprint: bool,
) -> bytes:
    """The wire form of a message (see :meth:`Message.encode`), from ``(type, value)`` pairs."""
    if len(transaction_id) != TRANSACTION_ID_SIZE:
        raise StunError("a STUN transaction ID is 12 bytes")
    buf = bytearray(_HEADER.pack(message_type(method, cls), 0, MAGIC_COOKIE, transaction_id))
    for attr_type, value in attributes:
        if attr_type in _COMPUTED:
            continue
        n = len(value)
        if not 0 <= attr_type <= 0xFFFF or n > 0xFFFF:
            raise StunError(f"STUN attribute {attr_type:#x} of {n} bytes cannot be encoded")
        buf += _ATTR_HEADER.pack(attr_type, n)
        buf += value
        buf += PADDING[-n & 0x03]
    if integrity_key is not None:
        struct.pack_into("!H", buf, 2, len(buf) + 4 + _MI_SIZE - HEADER_SIZE)
        mac = hmac.digest(integrity_key, buf, "sha1")
        buf += _ATTR_HEADER.pack(MESSAGE_INTEGRITY, _MI_SIZE) + mac
    if integrity_sha256_key is not None:
        struct.pack_into("!H", buf, 2, len(buf) + 4 + _MI256_MAX - HEADER_SIZE)
        mac = hmac.digest(integrity_sha256_key, buf, "sha256")
        buf += _ATTR_HEADER.pack(MESSAGE_INTEGRITY_SHA256, _MI256_MAX) + mac
    if fingerprint:
        struct.pack_into("!H", buf, 2, len(buf) + 4 + _FINGERPRINT_SIZE - HEADER_SIZE)
        crc = zlib.crc32(buf) ^ FINGERPRINT_XOR
        buf += _ATTR_HEADER.pack(FINGERPRINT, _FINGERPRINT_SIZE) + _U32.pack(crc)
    if len(buf) > MAX_MESSAGE_SIZE:
        raise StunError(f"STUN message of {len(buf)} bytes is too large")
    struct.pack_into("!H", buf, 2, len(buf) - HEADER_SIZE)
    return bytes(buf)


# --- parsing -----------------------------------------------------------------------------------


def is_stun(data: bytes | bytearray | memoryview) -> bool:
    """Cheap demultiplexing test (RFC 8489 §6.3, RFC 8656 §12): could this be a STUN message?

    Checks the two leading zero bits, a length that is a multiple of 4 and the magic cookie.
    ChannelData starts with the bits ``01`` and never passes. :func:`parse` does the rest.
    """
    return (
        len(data) >= HEADER_SIZE
        and data[0] < 0x40
        and data[3] & 0x03 == 0
        and data[4:8] == _COOKIE_BYTES
    )


def parse(data: bytes | bytearray | memoryview) -> Message:
    """Decode one complete STUN message; raise :class:`StunError` on anything malformed.

    The input must be exactly one message: its length must equal the header's length field
    plus 20 (a datagram with trailing bytes is refused; a stream is split by
    :mod:`relay.proto.framing` first).
    """
    raw = bytes(data)
    size = len(raw)
    if size < HEADER_SIZE:
        raise StunError(f"STUN message too short ({size} bytes)")
    msg_type, length, cookie, transaction_id = _HEADER.unpack_from(raw)
    if msg_type & 0xC000:
        raise StunError("not a STUN message (the two leading bits are not zero)")
    if cookie != MAGIC_COOKIE:
        raise StunError("not a STUN message (bad magic cookie)")
    if length & 0x03:
        raise StunError(f"STUN message length {length} is not a multiple of 4")
    if size != HEADER_SIZE + length:
        raise StunError(f"STUN message length field says {length}, got {size - HEADER_SIZE}")
    method, cls = split_message_type(msg_type)

    attributes: list[Attribute] = []
    # 0: normal, 1: after MESSAGE-INTEGRITY, 2: after MESSAGE-INTEGRITY-SHA256,
    # 3: after FINGERPRINT.
    state = 0
    pos = HEADER_SIZE
    while pos < size:
        if size - pos < 4:
            raise StunError("truncated STUN attribute header")
        attr_type, attr_len = _ATTR_HEADER.unpack_from(raw, pos)
        start = pos + 4
        end = start + attr_len
        if end > size:
            raise StunError(f"STUN attribute {attr_type:#06x} overruns the message")
        padded_end = end + (-attr_len & 0x03)
        if padded_end > size:
            raise StunError(f"STUN attribute {attr_type:#06x} padding overruns the message")
        offset = pos
        pos = padded_end
        if state == 3:
            continue
        if state == 2 and attr_type != FINGERPRINT:
            continue
        if state == 1 and attr_type not in (MESSAGE_INTEGRITY_SHA256, FINGERPRINT):
            continue
        if attr_type == MESSAGE_INTEGRITY:
            if attr_len != _MI_SIZE:
                raise StunError(f"MESSAGE-INTEGRITY must be 20 bytes, not {attr_len}")
            state = 1
        elif attr_type == MESSAGE_INTEGRITY_SHA256:
            if not (_MI256_MIN <= attr_len <= _MI256_MAX and attr_len & 0x03 == 0):
                raise StunError(f"MESSAGE-INTEGRITY-SHA256 of {attr_len} bytes")
            state = 2
        elif attr_type == FINGERPRINT:
            if attr_len != _FINGERPRINT_SIZE:
                raise StunError(f"FINGERPRINT must be 4 bytes, not {attr_len}")
            state = 3
        attributes.append(Attribute(attr_type, raw[start:end], offset))
    return Message(method, cls, transaction_id, tuple(attributes), raw)


# --- integrity and fingerprint (RFC 8489 §14.5, §14.6, §14.7) -------------------------------


def _with_length(raw: bytes, offset: int, attr_value_len: int) -> bytearray:
    """``raw[:offset]`` with the header length rewritten to end after an attribute at offset."""
    prefix = bytearray(raw[:offset])
    struct.pack_into("!H", prefix, 2, offset + 4 + attr_value_len - HEADER_SIZE)
    return prefix


def _as_message(message: Message | bytes | bytearray | memoryview) -> Message:
    return message if isinstance(message, Message) else parse(message)


def verify_integrity(message: Message | bytes | bytearray | memoryview, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) against ``key``.

    ``key`` is the short-term password or the long-term key (:func:`relay.core.auth.long_term_key`).
    False when the attribute is absent or the message was not parsed from bytes. Bytes are
    parsed first (a malformed message raises :class:`StunError`).
    """
    msg = _as_message(message)
    attr = msg.find(MESSAGE_INTEGRITY)
    if attr is None or attr.offset < 0 or not msg.raw:
        return False
    mac = hmac.digest(key, _with_length(msg.raw, attr.offset, _MI_SIZE), "sha1")
    return hmac.compare_digest(mac, attr.value)


def verify_integrity_sha256(message: Message | bytes | bytearray | memoryview, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, truncated, RFC 8489 §14.6)."""
    msg = _as_message(message)
    attr = msg.find(MESSAGE_INTEGRITY_SHA256)
    if attr is None or attr.offset < 0 or not msg.raw:
        return False
    n = len(attr.value)
    mac = hmac.digest(key, _with_length(msg.raw, attr.offset, n), "sha256")[:n]
    return hmac.compare_digest(mac, attr.value)


def verify_fingerprint(message: Message | bytes | bytearray | memoryview) -> bool:
    """Check FINGERPRINT (RFC 8489 §14.7). False when absent, wrong, or not the last attribute."""
    msg = _as_message(message)
    attr = msg.find(FINGERPRINT)
    if attr is None or attr.offset < 0 or attr.offset + 8 != len(msg.raw):
        return False
    crc = zlib.crc32(_with_length(msg.raw, attr.offset, _FINGERPRINT_SIZE)) ^ FINGERPRINT_XOR
    return _U32.pack(crc) == attr.value


# --- building ----------------------------------------------------------------------------------


class MessageBuilder:
    """Accumulates attributes for a message, then :meth:`build` or :meth:`encode` it.

    >>> MessageBuilder(BINDING, MessageClass.REQUEST).add_text(SOFTWARE, "x").encode(
    ...     fingerprint=True)  # doctest: +SKIP
    """

    __slots__ = ("_attributes", "cls", "method", "transaction_id")

    def __init__(self, method: int, cls: MessageClass, transaction_id: bytes | None = None) -> None:
        """``transaction_id`` defaults to 12 fresh random bytes (RFC 8489 §6: uniform random)."""
        self.method = method
        self.cls = cls
        self.transaction_id = os.urandom(12) if transaction_id is None else transaction_id
        if len(self.transaction_id) != TRANSACTION_ID_SIZE:
            raise StunError("a STUN transaction ID is 12 bytes")
        message_type(method, cls)  # validates the method
        #: ``(type, value)`` pairs: encoding needs no Attribute objects, only build() does.
        self._attributes: list[tuple[int, bytes]] = []

    @classmethod
    def success(cls, request: Message) -> MessageBuilder:
        """A success response to ``request``: same method and transaction ID."""
        return cls(request.method, MessageClass.SUCCESS, request.transaction_id)

    @classmethod
    def error(cls, request: Message, code: int, reason: str | None = None) -> MessageBuilder:
        """An error response to ``request`` with ERROR-CODE already added."""
        return cls(request.method, MessageClass.ERROR, request.transaction_id).add_error_code(
            code, reason
        )

    def add(self, attr_type: int, value: bytes) -> MessageBuilder:
        """Append a raw attribute (padding is added on encoding)."""
        if not 0 <= attr_type <= 0xFFFF:
            raise StunError(f"STUN attribute type {attr_type:#x} does not fit in 16 bits")
        self._attributes.append((attr_type, bytes(value)))
        return self

    def add_text(
        self, attr_type: int, text: str, max_bytes: int = MAX_TEXT_ENCODE
    ) -> MessageBuilder:
        """Append a UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE)."""
        return self.add(attr_type, encode_text(text, max_bytes))

    def add_address(self, attr_type: int, host: str, port: int) -> MessageBuilder:
        """Append a plain address attribute (MAPPED-ADDRESS, ALTERNATE-SERVER)."""
        return self.add(attr_type, encode_address(host, port))

    def add_xor_address(self, attr_type: int, host: str, port: int) -> MessageBuilder:
        """Append an XOR address attribute, XORed with this builder's transaction ID."""
        return self.add(attr_type, encode_xor_address(host, port, self.transaction_id))

    def add_error_code(self, code: int, reason: str | None = None) -> MessageBuilder:
        """Append ERROR-CODE; ``reason`` defaults to the phrase in :data:`ERROR_REASONS`."""
        if reason is None:
            if code not in ERROR_REASONS:
                raise StunError(f"no default reason phrase for error {code}; pass one")
            reason = ERROR_REASONS[code]
        return self.add(ERROR_CODE, encode_error_code(code, reason))

    def add_unknown_attributes(self, types: Iterable[int]) -> MessageBuilder:
        """Append UNKNOWN-ATTRIBUTES listing ``types``."""
        return self.add(UNKNOWN_ATTRIBUTES, encode_unknown_attributes(types))

    def build(self) -> Message:
        """The message so far (without integrity or fingerprint: those exist only encoded)."""
        attributes = tuple(Attribute(t, value) for t, value in self._attributes)
        return Message(self.method, self.cls, self.transaction_id, attributes)

    def encode(
        self,
        *,
        integrity_key: bytes | None = None,
        integrity_sha256_key: bytes | None = None,
        fingerprint: bool = False,
    ) -> bytes:
        """Serialise :meth:`build`'s message (without building it); see :meth:`Message.encode`."""
        return _encode(
            self.method,
            self.cls,
            self.transaction_id,
            self._attributes,
            integrity_key=integrity_key,
            integrity_sha256_key=integrity_sha256_key,
            fingerprint=fingerprint,
        )


# --- attribute value codecs --------------------------------------------------------------------


def encode_text(text: str, max_bytes: int = MAX_TEXT_ENCODE) -> bytes:
    """UTF-8 text value, at most ``max_bytes`` long."""
    value = text.encode("utf-8")
    if len(value) > max_bytes:
        raise StunError(f"text attribute of {len(value)} bytes exceeds {max_bytes}")
    return value


def decode_text(value: bytes, max_bytes: int = MAX_TEXT_DECODE) -> str:
    """Strict UTF-8 text value of at most ``max_bytes``."""
    if len(value) > max_bytes:
        raise StunError(f"text attribute of {len(value)} bytes exceeds {max_bytes}")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunError("text attribute is not valid UTF-8") from exc


def _ip(
    host: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return host
    try:
        return ipaddress.ip_address(host)
    except ValueError as exc:
        raise StunError(f"{host!r} is not an IP address") from exc


def _check_port(port: int) -> None:
    if not 0 <= port <= 0xFFFF:
        raise StunError(f"port {port} is out of range")


def encode_address(host: str | ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bytes:
    """MAPPED-ADDRESS value (RFC 8489 §14.1): reserved, family, port, address."""
    ip = _ip(host)
    _check_port(port)
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    return struct.pack("!BBH", 0, family, port) + ip.packed


def _address_parts(value: bytes) -> tuple[int, int, bytes]:
    if len(value) < 4:
        raise StunError("address attribute too short")
    family, port = value[1], (value[2] << 8) | value[3]
    body = value[4:]
    if family == FAMILY_IPV4:
        if len(body) != 4:
            raise StunError("IPv4 address attribute must be 8 bytes")
    elif family == FAMILY_IPV6:
        if len(body) != 16:
            raise StunError("IPv6 address attribute must be 20 bytes")
    else:
        raise StunError(f"unknown address family {family:#04x}")
    return family, port, body


def _host(family: int, address: int) -> str:
    if family == FAMILY_IPV4:
        return str(ipaddress.IPv4Address(address))
    return str(ipaddress.IPv6Address(address))


def decode_address(value: bytes) -> TransportAddress:
    """Decode a MAPPED-ADDRESS / ALTERNATE-SERVER value (RFC 8489 §14.1)."""
    family, port, body = _address_parts(value)
    return TransportAddress(_host(family, int.from_bytes(body, "big")), port)


def _xor_mask(family: int, transaction_id: bytes) -> int:
    if family == FAMILY_IPV4:
        return MAGIC_COOKIE
    if len(transaction_id) != TRANSACTION_ID_SIZE:
        raise StunError("a STUN transaction ID is 12 bytes")
    return int.from_bytes(_COOKIE_BYTES + transaction_id, "big")


#: An IPv4 XOR address value (RFC 8489 §14.2): reserved, family, X-Port, X-Address.
_XOR_V4: Final = struct.Struct("!BBHI")


def encode_xor_address(
    host: str | ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, transaction_id: bytes
) -> bytes:
    """XOR-MAPPED-ADDRESS value (RFC 8489 §14.2); also XOR-PEER/RELAYED-ADDRESS (RFC 8656)."""
    if isinstance(host, str) and ":" not in host and 0 <= port <= 0xFFFF:
        # The addresses a socket reports: inet_pton is far cheaper than ipaddress, and what
        # it refuses goes the strict way below.
        try:
            packed = socket.inet_pton(socket.AF_INET, host)
        except (OSError, ValueError):  # not dotted-quad text, or a NUL in it
            pass
        else:
            xored = int.from_bytes(packed, "big") ^ MAGIC_COOKIE
            return _XOR_V4.pack(0, FAMILY_IPV4, port ^ (MAGIC_COOKIE >> 16), xored)
    ip = _ip(host)
    _check_port(port)
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    size = 4 if family == FAMILY_IPV4 else 16
    address = int(ip) ^ _xor_mask(family, transaction_id)
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + address.to_bytes(
        size, "big"
    )


def decode_xor_address(value: bytes, transaction_id: bytes) -> TransportAddress:
    """Decode an XOR address value (RFC 8489 §14.2) given the message's transaction ID."""
    family, xport, body = _address_parts(value)
    address = int.from_bytes(body, "big") ^ _xor_mask(family, transaction_id)
    return TransportAddress(_host(family, address), xport ^ (MAGIC_COOKIE >> 16))


def encode_error_code(code: int, reason: str) -> bytes:
    """ERROR-CODE value (RFC 8489 §14.8): class (hundreds) and number, then the reason."""
    if not 300 <= code <= 699:
        raise StunError(f"error code {code} is outside 300..699")
    return struct.pack("!HBB", 0, code // 100, code % 100) + encode_text(reason)


def decode_error_code(value: bytes) -> ErrorCode:
    """Decode an ERROR-CODE value; the class must be 3..6 and the number 0..99."""
    if len(value) < 4:
        raise StunError("ERROR-CODE too short")
    cls, number = value[2] & 0x07, value[3]
    if not 3 <= cls <= 6 or number > 99:
        raise StunError(f"ERROR-CODE class {cls} number {number} is invalid")
    return ErrorCode(cls * 100 + number, decode_text(value[4:]))


def encode_unknown_attributes(types: Iterable[int]) -> bytes:
    """UNKNOWN-ATTRIBUTES value (RFC 8489 §14.13): a list of 16-bit types."""
    out = bytearray()
    for t in types:
        if not 0 <= t <= 0xFFFF:
            raise StunError(f"attribute type {t:#x} does not fit in 16 bits")
        out += t.to_bytes(2, "big")
    return bytes(out)


def decode_unknown_attributes(value: bytes) -> tuple[int, ...]:
    """Decode UNKNOWN-ATTRIBUTES."""
    if len(value) % 2:
        raise StunError("UNKNOWN-ATTRIBUTES length is odd")
    return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))
