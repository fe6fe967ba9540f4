"""DTLS record framing (RFC 6347 §4.1), only as far as the listener must look before OpenSSL
does: whether a datagram is a well-formed sequence of records, whether it opens a handshake
(an epoch-0 ClientHello, §4.2.2), and how to cut what OpenSSL wrote into datagrams.

Nothing here decrypts or checks anything cryptographic; OpenSSL does all of that. A memory
BIO keeps no datagram boundaries, so the records OpenSSL wrote are packed back into
datagrams of at most the MTU (several records per datagram are allowed, §4.1.1).
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "APPLICATION_DATA",
    "HANDSHAKE",
    "HEADER_SIZE",
    "datagrams",
    "is_client_hello",
    "scan",
]

#: type(1) version(2) epoch(2) sequence_number(6) length(2), RFC 6347 §4.1.
HEADER_SIZE: Final = 13
CHANGE_CIPHER_SPEC: Final = 20
ALERT: Final = 21
HANDSHAKE: Final = 22
APPLICATION_DATA: Final = 23
#: DTLS 1.0 and 1.2 on the wire ({254, 255}, {254, 253}); a ClientHello's record may carry 1.0.
_VERSIONS: Final = (0xFEFF, 0xFEFD)
_CONTENT_TYPES: Final = (CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA)
#: Record header fields: type, version, epoch (the 6-byte sequence number skipped), length.
_HEADER = struct.Struct("!BHH6xH")
_CLIENT_HELLO: Final = 1
#: The smallest ClientHello record: header, a 12-byte handshake header, version, random.
_MIN_CLIENT_HELLO: Final = HEADER_SIZE + 12 + 2 + 32


def scan(data: bytes | memoryview) -> tuple[int, bool]:
    """How many records ``data`` holds and whether all are application data; ``(0, False)``
    for a datagram that is not a sequence of DTLS records (dropped before OpenSSL)."""
    size = len(data)
    offset = 0
    count = 0
    only_data = True
    while offset < size:
        if size - offset < HEADER_SIZE:
            return 0, False
        kind, version, _epoch, length = _HEADER.unpack_from(data, offset)
        if kind not in _CONTENT_TYPES or version not in _VERSIONS:
            return 0, False
        offset += HEADER_SIZE + length
        if offset > size:
            return 0, False
        count += 1
        only_data = only_data and kind == APPLICATION_DATA
    return count, only_data and count > 0


def is_client_hello(data: bytes | memoryview) -> bool:
    """Whether ``data`` starts with an epoch-0 handshake record holding a ClientHello (what
    may open a DTLS association, RFC 6347 §4.2.1)."""
    if len(data) < _MIN_CLIENT_HELLO:
        return False
    kind, version, epoch, length = _HEADER.unpack_from(data, 0)
    return (
        kind == HANDSHAKE
        and version in _VERSIONS
        and epoch == 0
        and HEADER_SIZE + length <= len(data)
        and data[HEADER_SIZE] == _CLIENT_HELLO
    )


def datagrams(out: bytes, mtu: int) -> list[bytes]:
    """``out`` (records OpenSSL wrote one after another) as datagrams of at most ``mtu``
    bytes, records kept whole and in order (a record longer than ``mtu`` goes alone)."""
    if len(out) <= mtu:
        return [out] if out else []
    result: list[bytes] = []
    start = offset = 0
    size = len(out)
    while offset < size:
        if size - offset < HEADER_SIZE:
            offset = size  # a torn tail cannot happen with OpenSSL; keep it with the rest
            break
        length = int.from_bytes(out[offset + 11 : offset + 13], "big")
        end = min(size, offset + HEADER_SIZE + length)
        if end - start > mtu and offset > start:
            result.append(out[start:offset])
            start = offset
        offset = end
    if start < size:
        result.append(out[start:size])
    return result
