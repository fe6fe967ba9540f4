"""ChannelData messages (RFC 8656 §12.4, §12.5), sans-I/O.

A ChannelData message is a 4-byte header (16-bit channel number, 16-bit length of the
application data) followed by the data. Channel numbers 0x4000..0x4FFF are the valid ones
(§12); the first two bits are therefore ``01``, which tells ChannelData apart from STUN
(``00``). Over TCP (a stream) the message MUST be padded to a multiple of 4 bytes, and the
padding is not counted in the length; over UDP padding is optional (§12.5).

The packet path parses and writes the header with :func:`unpack_header` and
:func:`pack_header_into` (``struct`` methods: no Python call per packet), the same ones
:func:`decode` and :func:`encode` use, and pads with :data:`relay.proto.stun.PADDING`.

Decoding raises :class:`relay.proto.stun.StunError`, and nothing else.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from relay.proto.stun import PADDING, StunError

__all__ = [
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "HEADER_SIZE",
    "MAX_DATA_SIZE",
    "ChannelData",
    "decode",
    "encode",
    "frame_size",
    "is_channeldata",
    "is_valid_channel",
    "pack_header_into",
    "unpack_header",
]

CHANNEL_MIN: Final = 0x4000
CHANNEL_MAX: Final = 0x4FFF
HEADER_SIZE: Final = 4
MAX_DATA_SIZE: Final = 0xFFFF

_HEADER = struct.Struct("!HH")
#: ``unpack_header(buffer, offset=0) -> (channel, length)``: the header at ``offset``.
unpack_header: Final = _HEADER.unpack_from
#: ``pack_header_into(buffer, offset, channel, length)``: write a header in place, in front of
#: data already in ``buffer`` at ``offset + 4``.
pack_header_into: Final = _HEADER.pack_into


class ChannelData(NamedTuple):
    """A decoded ChannelData message: the channel number and the application data."""

    channel: int
    data: bytes


def is_valid_channel(channel: int) -> bool:
    """Whether ``channel`` is in the range clients may bind (0x4000..0x4FFF, §12)."""
    return CHANNEL_MIN <= channel <= CHANNEL_MAX


def is_channeldata(data: bytes | bytearray | memoryview) -> bool:
    """Cheap demultiplexing test: a header is present and the channel is in 0x4000..0x4FFF."""
    return len(data) >= HEADER_SIZE and 0x40 <= data[0] <= 0x4F


def frame_size(length: int) -> int:
    """Bytes a ChannelData message with ``length`` bytes of data takes on a stream (padded)."""
    return HEADER_SIZE + length + (-length & 0x03)


def encode(channel: int, data: bytes | bytearray | memoryview, *, pad: bool = False) -> bytes:
    """Build a ChannelData message; ``pad=True`` pads to 4 bytes (required over TCP)."""
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunError(f"channel number {channel:#06x} is outside 0x4000..0x4FFF")
    n = len(data)
    if n > MAX_DATA_SIZE:
        raise StunError(f"ChannelData of {n} bytes exceeds {MAX_DATA_SIZE}")
    message = bytearray(HEADER_SIZE + n)
    pack_header_into(message, 0, channel, n)
    message[HEADER_SIZE:] = data
    if pad:
        message += PADDING[-n & 0x03]
    return bytes(message)


def decode(data: bytes | bytearray | memoryview, *, stream: bool = False) -> ChannelData:
    """Decode one ChannelData message.

    With ``stream=False`` (a UDP datagram) the message may be unpadded or padded to 4 bytes;
    with ``stream=True`` (a frame from :class:`relay.proto.framing.StreamDeframer`) it must be
    padded. Any other trailing byte count is an error.
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise StunError(f"ChannelData too short ({size} bytes)")
    channel, length = unpack_header(data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunError(f"channel number {channel:#06x} is outside 0x4000..0x4FFF")
    end = HEADER_SIZE + length
    padded = end + (-length & 0x03)
    if size != padded and (stream or size != end):
        raise StunError(f"ChannelData length field says {length}, got {size - HEADER_SIZE}")
    return ChannelData(channel, bytes(data[HEADER_SIZE:end]))
