"""ChannelData framing (RFC 8656 §12.4, §12.5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.proto import channeldata, stun


def test_encode_layout() -> None:
    assert channeldata.encode(0x4001, b"hello") == b"\x40\x01\x00\x05hello"
    padded = channeldata.encode(0x4FFF, b"hello", pad=True)
    assert padded == b"\x4f\xff\x00\x05hello\x00\x00\x00"
    assert channeldata.encode(0x4000, b"", pad=True) == b"\x40\x00\x00\x00"
    assert channeldata.encode(0x4000, b"abcd", pad=True) == b"\x40\x00\x00\x04abcd"
    assert channeldata.frame_size(5) == 12
    assert channeldata.frame_size(0) == 4


def test_decode_udp_accepts_padded_and_unpadded() -> None:
    expected = channeldata.ChannelData(0x4001, b"hello")
    assert channeldata.decode(b"\x40\x01\x00\x05hello") == expected
    assert channeldata.decode(b"\x40\x01\x00\x05hello\x00\x00\x00") == expected
    assert channeldata.decode(bytearray(b"\x40\x01\x00\x05hello")) == expected
    with pytest.raises(stun.StunError):
        channeldata.decode(b"\x40\x01\x00\x05hello\x00")  # neither
    with pytest.raises(stun.StunError):
        channeldata.decode(b"\x40\x01\x00\x05hello\x00\x00\x00\x00")  # too much


def test_decode_stream_requires_padding() -> None:
    assert channeldata.decode(b"\x40\x01\x00\x05hello\x00\x00\x00", stream=True).data == b"hello"
    with pytest.raises(stun.StunError):
        channeldata.decode(b"\x40\x01\x00\x05hello", stream=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x40\x01\x00",
        b"\x40\x01\x00\x05hell",  # short
        b"\x50\x00\x00\x00",  # reserved channel range
        b"\x3f\xff\x00\x00",  # below the range (STUN's first bits)
        b"\x80\x00\x00\x00",
    ],
)
def test_decode_malformed(data: bytes) -> None:
    with pytest.raises(stun.StunError):
        channeldata.decode(data)


def test_channel_ranges() -> None:
    assert channeldata.is_valid_channel(0x4000)
    assert channeldata.is_valid_channel(0x4FFF)
    assert not channeldata.is_valid_channel(0x3FFF)
    assert not channeldata.is_valid_channel(0x5000)
    for channel in (0x3FFF, 0x5000, 0xFFFF):
        with pytest.raises(stun.StunError):
            channeldata.encode(channel, b"")
    with pytest.raises(stun.StunError):
        channeldata.encode(0x4000, bytes(0x10000))


def test_demultiplexing() -> None:
    cd = channeldata.encode(0x4123, bytes(20))
    msg = stun.MessageBuilder(stun.BINDING, stun.MessageClass.REQUEST).encode()
    assert channeldata.is_channeldata(cd) and not stun.is_stun(cd)
    assert stun.is_stun(msg) and not channeldata.is_channeldata(msg)
    assert not channeldata.is_channeldata(b"\x40\x00\x00")
    assert not channeldata.is_channeldata(b"\x50\x00\x00\x00")


@settings(deadline=None, max_examples=200)
@given(st.integers(0x4000, 0x4FFF), st.binary(max_size=300), st.booleans())
def test_round_trip(channel: int, data: bytes, pad: bool) -> None:
    encoded = channeldata.encode(channel, data, pad=pad)
    assert channeldata.is_channeldata(encoded)
    assert channeldata.decode(encoded) == (channel, data)
    if pad or len(data) % 4 == 0:
        assert channeldata.decode(encoded, stream=True) == (channel, data)
    else:
        with pytest.raises(stun.StunError):
            channeldata.decode(encoded, stream=True)


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=80), st.booleans())
def test_fuzz_decode(data: bytes, stream: bool) -> None:
    try:
        decoded = channeldata.decode(data, stream=stream)
    except stun.StunError:
        return
    assert channeldata.is_valid_channel(decoded.channel)
    assert len(decoded.data) <= len(data) - 4


def test_packet_path_helpers_layout() -> None:
    assert channeldata.unpack_header(b"\x40\x01\x00\x05hello") == (0x4001, 5)
    assert channeldata.unpack_header(b"xx\x7f\xff\xff\xff", 2) == (0x7FFF, 0xFFFF)
    buffer = bytearray(b"..\x00\x00\x00\x00hello")
    channeldata.pack_header_into(buffer, 2, 0x4FFF, 5)
    assert bytes(buffer[2:]) == channeldata.encode(0x4FFF, b"hello")
    assert stun.PADDING == (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")


@settings(deadline=None, max_examples=200)
@given(st.integers(0x4000, 0x4FFF), st.binary(max_size=300), st.booleans(), st.integers(0, 8))
def test_packet_path_helpers_are_the_codec(
    channel: int, data: bytes, pad: bool, offset: int
) -> None:
    """The relay frames peer data in place: a header written in front of data already in its
    buffer, padding after it. That is :func:`channeldata.encode`, byte for byte, and the
    header it parses from a client's message is the one :func:`channeldata.decode` reads."""
    buffer = bytearray(offset + 4 + len(data) + 3)
    buffer[offset + 4 : offset + 4 + len(data)] = data
    channeldata.pack_header_into(buffer, offset, channel, len(data))
    end = offset + 4 + len(data)
    if pad:
        padding = stun.PADDING[-len(data) & 3]
        buffer[end : end + len(padding)] = padding
        end += len(padding)
    framed = bytes(buffer[offset:end])
    assert framed == channeldata.encode(channel, data, pad=pad)
    assert channeldata.unpack_header(framed) == (channel, len(data))
    assert channeldata.decode(framed) == (channel, data)
