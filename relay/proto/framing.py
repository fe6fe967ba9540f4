"""Split a TURN-over-TCP byte stream into STUN and ChannelData messages, sans-I/O.

Over a stream, STUN messages are delimited by their header's length field (RFC 8489 §6.2.2)
and ChannelData messages by theirs, padded to a multiple of 4 (RFC 8656 §12.5). The first two
bits tell them apart: ``00`` STUN, ``01`` ChannelData (channels 0x4000..0x4FFF only, or up to
0x7FFF with ``channel_max=LEGACY_CHANNEL_MAX`` for RFC 5766 clients such as coturn's). Anything
else means the stream is not TURN (or lost sync), and nothing after it can be trusted: the
deframer raises :class:`relay.proto.stun.StunError` so the caller closes the connection.

>>> d = StreamDeframer()
>>> frames = d.feed(chunk)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Final

from relay.proto import channeldata
from relay.proto.stun import HEADER_SIZE, MAGIC_COOKIE, MAX_MESSAGE_SIZE, StunError

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "LEGACY_CHANNEL_MAX", "StreamDeframer"]

_COOKIE: Final = MAGIC_COOKIE.to_bytes(4, "big")
#: RFC 5766 allowed channels up to 0x7FFF; RFC 8656 reserves 0x5000..0xFFFF.
LEGACY_CHANNEL_MAX: Final = 0x7FFF
#: The largest frame either format can describe (a STUN message with a 0xFFFC length).
DEFAULT_MAX_FRAME_SIZE: Final = MAX_MESSAGE_SIZE


class StreamDeframer:
    """Buffers stream input and returns complete frames.

    Each frame is the exact bytes of one STUN message (for :func:`relay.proto.stun.parse`) or one
    padded ChannelData message (for ``channeldata.decode(frame, stream=True)``). A frame whose
    header announces more than ``max_frame_size`` bytes is an error, so a peer cannot make the
    buffer grow beyond one frame plus one read. On garbage the error is raised at once (frames
    completed earlier in the same call are dropped with it: the connection is going away), and
    every further call raises too.
    """

    __slots__ = ("_buffer", "_failed", "_last_channel_byte", "max_frame_size")

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        channel_max: int = channeldata.CHANNEL_MAX,
    ) -> None:
        """``channel_max`` 0x7FFF also takes RFC 5766's channels 0x5000..0x7FFF."""
        if max_frame_size < HEADER_SIZE:
            raise ValueError(f"max_frame_size must be at least {HEADER_SIZE}")
        if channel_max not in (channeldata.CHANNEL_MAX, LEGACY_CHANNEL_MAX):
            raise ValueError("channel_max is 0x4FFF (RFC 8656) or 0x7FFF (RFC 5766)")
        self.max_frame_size = max_frame_size
        self._last_channel_byte = channel_max >> 8
        self._buffer = bytearray()
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data``; return the frames it completes, in order (possibly none)."""
        if self._failed is not None:
            raise StunError(self._failed)
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos = 0
        available = len(buf)
        try:
            while pos < available:
                first = buf[pos]
                if first > self._last_channel_byte:
                    raise StunError(f"stream byte {first:#04x} starts neither STUN nor ChannelData")
                if available - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                if first < 0x40:
                    if length & 0x03:
                        raise StunError(f"STUN length {length} is not a multiple of 4")
                    if available - pos >= 8 and buf[pos + 4 : pos + 8] != _COOKIE:
                        raise StunError("bad magic cookie in STUN stream")
                    size = HEADER_SIZE + length
                else:
                    size = channeldata.frame_size(length)
                if size > self.max_frame_size:
                    raise StunError(f"frame of {size} bytes exceeds {self.max_frame_size}")
                if available - pos < size:
                    break
                frames.append(bytes(buf[pos : pos + size]))
                pos += size
        except StunError as exc:
            self._failed = str(exc)
            buf.clear()
            raise
        del buf[:pos]
        return frames
