"""Data indications (RFC 8656 §11.3), written in place in front of data already in a buffer.

The relay receives a peer's datagram :data:`MAX_HEADER_SIZE` bytes into its buffer, then writes
the indication's header in front of it, so the message leaves without a copy:

* the STUN header (RFC 8489 §5): a Data indication (:data:`MESSAGE_TYPE`), its length, the
  magic cookie and the transaction ID;
* XOR-PEER-ADDRESS (RFC 8656 §14.3), from :func:`xor_peer_address`: 12 bytes for an IPv4 peer,
  the same in every message (:func:`xor_peer_address_v4`, so the caller can keep it per peer),
  24 for an IPv6 one (XORed with the transaction ID, RFC 8489 §14.2);
* the DATA attribute's header (RFC 8656 §14.4).

The caller pads the data to a multiple of 4 bytes with :data:`relay.proto.stun.PADDING`. What
comes out is the message :class:`relay.proto.stun.MessageBuilder` would encode for the same
attributes, byte for byte (the tests check it).
"""

from __future__ import annotations

import socket
import struct
from typing import Final

from relay.proto.stun import (
    FAMILY_IPV4,
    HEADER_SIZE,
    MAGIC_COOKIE,
    MessageClass,
    encode_xor_address,
    message_type,
)
from relay.proto.turn import DATA, DATA_METHOD, XOR_PEER_ADDRESS

__all__ = [
    "MAX_HEADER_SIZE",
    "MESSAGE_TYPE",
    "write_header",
    "xor_peer_address",
    "xor_peer_address_v4",
]

#: Method Data, class indication: 0x0017.
MESSAGE_TYPE: Final = message_type(DATA_METHOD, MessageClass.INDICATION)
#: The longest header: 20 (STUN) + 24 (XOR-PEER-ADDRESS of an IPv6 peer) + 4 (DATA's header).
MAX_HEADER_SIZE: Final = HEADER_SIZE + 24 + 4

_STUN_HEADER = struct.Struct("!HHI12s")
_ATTRIBUTE_HEADER = struct.Struct("!HH")
_XOR_V4 = struct.Struct("!HHBBHI")
_PORT_MASK: Final = MAGIC_COOKIE >> 16


def xor_peer_address_v4(host: str, port: int) -> bytes:
    """XOR-PEER-ADDRESS of an IPv4 peer, header and value (12 bytes): the same in every
    message, as an IPv4 address is XORed with the magic cookie only."""
    address = int.from_bytes(socket.inet_aton(host), "big")
    return _XOR_V4.pack(
        XOR_PEER_ADDRESS, 8, 0, FAMILY_IPV4, port ^ _PORT_MASK, address ^ MAGIC_COOKIE
    )


def xor_peer_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """XOR-PEER-ADDRESS of any peer, header and value, for the message ``transaction_id``."""
    value = encode_xor_address(host, port, transaction_id)
    return _ATTRIBUTE_HEADER.pack(XOR_PEER_ADDRESS, len(value)) + value


def write_header(
    buffer: bytearray, data_at: int, size: int, peer_attribute: bytes, transaction_id: bytes
) -> int:
    """Write the Data indication header for the ``size`` bytes at ``buffer[data_at:]``, with
    ``peer_attribute`` (from :func:`xor_peer_address`); return where the message starts.

    ``data_at`` must leave room: at least 24 bytes plus the attribute's length. The message
    ends after the data padded to 4 bytes; the padding is the caller's.
    """
    attribute_size = len(peer_attribute)
    start = data_at - HEADER_SIZE - attribute_size - 4
    length = attribute_size + 4 + size + (-size & 3)
    _STUN_HEADER.pack_into(buffer, start, MESSAGE_TYPE, length, MAGIC_COOKIE, transaction_id)
    at = start + HEADER_SIZE
    buffer[at : at + attribute_size] = peer_attribute
    _ATTRIBUTE_HEADER.pack_into(buffer, data_at - 4, DATA, size)
    return start
