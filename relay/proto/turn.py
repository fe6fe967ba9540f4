"""TURN constants and attribute value codecs (RFC 8656), on top of :mod:`relay.proto.stun`.

* §17 / §18: methods Allocate, Refresh, Send, Data, CreatePermission, ChannelBind.
* §18 / §14: attributes CHANNEL-NUMBER (§14.1), LIFETIME (§14.2), XOR-PEER-ADDRESS (§14.3),
  DATA (§14.4), XOR-RELAYED-ADDRESS (§14.5), REQUESTED-ADDRESS-FAMILY (§14.6), EVEN-PORT
  (§14.7), REQUESTED-TRANSPORT (§14.8), DONT-FRAGMENT (§14.9), RESERVATION-TOKEN (§14.10),
  ADDITIONAL-ADDRESS-FAMILY (§14.11), ADDRESS-ERROR-CODE (§14.12), ICMP (§14.13).
  The XOR address attributes share XOR-MAPPED-ADDRESS's layout: use
  :func:`relay.proto.stun.encode_xor_address` / :meth:`relay.proto.stun.Message.get_xor_address`.
* §15 / §18: error codes with their reason phrases.
* Timers: allocation lifetime default 600 s / max 3600 s (§7.2, §7.3), permissions 300 s
  (§9), channel bindings 600 s (§12).

Every decoder raises :class:`relay.proto.stun.StunError` for a malformed value, and nothing else.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from relay.proto.stun import (
    ERROR_REASONS as STUN_ERROR_REASONS,
)
from relay.proto.stun import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    STUN_ATTRIBUTES,
    Message,
    MessageBuilder,
    StunError,
    decode_text,
    encode_text,
)

__all__ = [
    "ADDITIONAL_ADDRESS_FAMILY",
    "ADDRESS_ERROR_CODE",
    "ALLOCATE",
    "CHANNEL_BIND",
    "CHANNEL_LIFETIME",
    "CHANNEL_NUMBER",
    "CREATE_PERMISSION",
    "DATA",
    "DATA_METHOD",
    "DEFAULT_LIFETIME",
    "DONT_FRAGMENT",
    "ERROR_REASONS",
    "EVEN_PORT",
    "ICMP",
    "KNOWN_ATTRIBUTES",
    "LIFETIME",
    "MAX_LIFETIME",
    "PERMISSION_LIFETIME",
    "REFRESH",
    "REQUESTED_ADDRESS_FAMILY",
    "REQUESTED_TRANSPORT",
    "RESERVATION_TOKEN",
    "SEND",
    "TRANSPORT_TCP",
    "TRANSPORT_UDP",
    "TURN_ATTRIBUTES",
    "XOR_PEER_ADDRESS",
    "XOR_RELAYED_ADDRESS",
    "AddressErrorCode",
    "Icmp",
    "decode_address_error_code",
    "decode_address_family",
    "decode_channel_number",
    "decode_even_port",
    "decode_icmp",
    "decode_lifetime",
    "decode_requested_transport",
    "decode_reservation_token",
    "encode_address_error_code",
    "encode_address_family",
    "encode_channel_number",
    "encode_even_port",
    "encode_icmp",
    "encode_lifetime",
    "encode_requested_transport",
    "encode_reservation_token",
    "error_response",
    "reason_phrase",
]

# RFC 8656 §7.2: a port reserved under a RESERVATION-TOKEN is held about 30 seconds.
RESERVATION_LIFETIME: Final = 30.0

# --- methods (RFC 8656 §18) --------------------------------------------------------------------

ALLOCATE: Final = 0x003
REFRESH: Final = 0x004
SEND: Final = 0x006
#: The Data method (indications from server to client). Named so to keep ``DATA`` for the
#: attribute.
DATA_METHOD: Final = 0x007
CREATE_PERMISSION: Final = 0x008
CHANNEL_BIND: Final = 0x009

# --- attributes (RFC 8656 §18) -----------------------------------------------------------------

CHANNEL_NUMBER: Final = 0x000C
LIFETIME: Final = 0x000D
XOR_PEER_ADDRESS: Final = 0x0012
DATA: Final = 0x0013
XOR_RELAYED_ADDRESS: Final = 0x0016
REQUESTED_ADDRESS_FAMILY: Final = 0x0017
EVEN_PORT: Final = 0x0018
REQUESTED_TRANSPORT: Final = 0x0019
DONT_FRAGMENT: Final = 0x001A
RESERVATION_TOKEN: Final = 0x0022
ADDITIONAL_ADDRESS_FAMILY: Final = 0x8000
ADDRESS_ERROR_CODE: Final = 0x8001
ICMP: Final = 0x8004

TURN_ATTRIBUTES: Final = frozenset(
    {
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        RESERVATION_TOKEN,
        ADDITIONAL_ADDRESS_FAMILY,
        ADDRESS_ERROR_CODE,
        ICMP,
    }
)
#: What a TURN server understands; pass to :meth:`Message.unknown_comprehension_required`.
KNOWN_ATTRIBUTES: Final = STUN_ATTRIBUTES | TURN_ATTRIBUTES

# --- values ------------------------------------------------------------------------------------

#: REQUESTED-TRANSPORT protocol numbers (IANA): UDP (RFC 8656) and TCP (RFC 6062).
TRANSPORT_UDP: Final = 17
TRANSPORT_TCP: Final = 6

DEFAULT_LIFETIME: Final = 600
MAX_LIFETIME: Final = 3600
PERMISSION_LIFETIME: Final = 300
CHANNEL_LIFETIME: Final = 600

#: Reason phrases of every error code a TURN server sends (RFC 8489 §14.8, RFC 8656 §18).
ERROR_REASONS: Final[dict[int, str]] = {
    **STUN_ERROR_REASONS,
    403: "Forbidden",
    437: "Allocation Mismatch",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    508: "Insufficient Capacity",
}


def reason_phrase(code: int) -> str:
    """The standard reason phrase for ``code``, or a generic one for an unlisted code."""
    return ERROR_REASONS.get(code, "Error")


def error_response(request: Message, code: int, reason: str | None = None) -> MessageBuilder:
    """An error response builder for ``request`` with ERROR-CODE ``code`` already added."""
    return MessageBuilder.error(request, code, reason_phrase(code) if reason is None else reason)


# --- codecs ------------------------------------------------------------------------------------

_U32 = struct.Struct("!I")


def _exact(value: bytes, size: int, name: str) -> None:
    if len(value) != size:
        raise StunError(f"{name} must be {size} bytes, not {len(value)}")


def encode_channel_number(channel: int) -> bytes:
    """CHANNEL-NUMBER (§14.1): 16-bit number and 16 RFFU bits (zero)."""
    if not 0 <= channel <= 0xFFFF:
        raise StunError(f"channel number {channel} does not fit in 16 bits")
    return struct.pack("!HH", channel, 0)


def decode_channel_number(value: bytes) -> int:
    """The channel number; range checks (0x4000..0x4FFF) are the server's (answer 400)."""
    _exact(value, 4, "CHANNEL-NUMBER")
    return (value[0] << 8) | value[1]


def encode_lifetime(seconds: int) -> bytes:
    """LIFETIME (§14.2): unsigned 32-bit seconds."""
    if not 0 <= seconds <= 0xFFFFFFFF:
        raise StunError(f"lifetime {seconds} does not fit in 32 bits")
    return _U32.pack(seconds)


def decode_lifetime(value: bytes) -> int:
    """LIFETIME in seconds."""
    _exact(value, 4, "LIFETIME")
    return int(_U32.unpack(value)[0])


def encode_address_family(family: int) -> bytes:
    """REQUESTED-/ADDITIONAL-ADDRESS-FAMILY (§14.6, §14.11): family byte and 24 RFFU bits."""
    if family not in (FAMILY_IPV4, FAMILY_IPV6):
        raise StunError(f"unknown address family {family:#x}")
    return bytes((family, 0, 0, 0))


def decode_address_family(value: bytes) -> int:
    """The family byte (0x01 IPv4, 0x02 IPv6); other values are returned for the server to
    answer 440 (Address Family not Supported)."""
    _exact(value, 4, "address family attribute")
    return value[0]


def encode_even_port(reserve_next: bool) -> bytes:
    """EVEN-PORT (§14.7): one byte, R bit first."""
    return b"\x80" if reserve_next else b"\x00"


def decode_even_port(value: bytes) -> bool:
    """Whether the R (reserve the next port) bit is set."""
    _exact(value, 1, "EVEN-PORT")
    return bool(value[0] & 0x80)


def encode_requested_transport(protocol: int) -> bytes:
    """REQUESTED-TRANSPORT (§14.8): IANA protocol number and 24 RFFU bits."""
    if not 0 <= protocol <= 0xFF:
        raise StunError(f"protocol {protocol} does not fit in 8 bits")
    return bytes((protocol, 0, 0, 0))


def decode_requested_transport(value: bytes) -> int:
    """The protocol number (17 UDP); others get 442 from the server."""
    _exact(value, 4, "REQUESTED-TRANSPORT")
    return value[0]


def encode_reservation_token(token: bytes) -> bytes:
    """RESERVATION-TOKEN (§14.10): 8 opaque bytes."""
    _exact(token, 8, "RESERVATION-TOKEN")
    return bytes(token)


def decode_reservation_token(value: bytes) -> bytes:
    """The 8-byte token."""
    _exact(value, 8, "RESERVATION-TOKEN")
    return bytes(value)


class AddressErrorCode(NamedTuple):
    """ADDRESS-ERROR-CODE (§14.12): which family failed, and why."""

    family: int
    code: int
    reason: str


def encode_address_error_code(family: int, code: int, reason: str | None = None) -> bytes:
    """ADDRESS-ERROR-CODE: family, 13 reserved bits, class, number, reason phrase."""
    if family not in (FAMILY_IPV4, FAMILY_IPV6):
        raise StunError(f"unknown address family {family:#x}")
    if not 300 <= code <= 699:
        raise StunError(f"error code {code} is outside 300..699")
    text = reason_phrase(code) if reason is None else reason
    return bytes((family, 0, code // 100, code % 100)) + encode_text(text)


def decode_address_error_code(value: bytes) -> AddressErrorCode:
    """Decode ADDRESS-ERROR-CODE."""
    if len(value) < 4:
        raise StunError("ADDRESS-ERROR-CODE too short")
    cls, number = value[2] & 0x07, value[3]
    if not 3 <= cls <= 6 or number > 99:
        raise StunError(f"ADDRESS-ERROR-CODE class {cls} number {number} is invalid")
    return AddressErrorCode(value[0], cls * 100 + number, decode_text(value[4:]))


class Icmp(NamedTuple):
    """ICMP (§14.13): the ICMP type and code a peer's packet caused, and its error data."""

    type: int
    code: int
    error_data: int


def encode_icmp(icmp_type: int, icmp_code: int, error_data: int = 0) -> bytes:
    """ICMP: 16 reserved bits, a 7-bit type, a 9-bit code (as §14.13 draws them), 32 bits of
    error data."""
    if not (0 <= icmp_type <= 0x7F and 0 <= icmp_code <= 0x1FF and 0 <= error_data <= 0xFFFFFFFF):
        raise StunError("ICMP type/code/data out of range")
    return struct.pack("!HHI", 0, (icmp_type << 9) | icmp_code, error_data)


def decode_icmp(value: bytes) -> Icmp:
    """Decode ICMP."""
    _exact(value, 8, "ICMP")
    _, type_code, data = struct.unpack("!HHI", value)
    return Icmp(type_code >> 9, type_code & 0x1FF, data)
