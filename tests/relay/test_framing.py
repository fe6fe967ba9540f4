"""The TCP stream deframer (RFC 8656 §12.5, RFC 8489 §6.2.2)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.proto import channeldata, stun
from relay.proto.framing import StreamDeframer
from tests.relay import vectors as v


def stun_message(payload: bytes = b"") -> bytes:
    builder = stun.MessageBuilder(0x004, stun.MessageClass.REQUEST, bytes(12))
    return builder.add(0x0013, payload).encode(fingerprint=True)


FRAMES = [
    channeldata.encode(0x4001, b"hello", pad=True),
    stun_message(b"abc"),
    channeldata.encode(0x4002, b"", pad=True),
    v.SAMPLE_REQUEST,
    channeldata.encode(0x4FFF, bytes(range(256)) * 3, pad=True),
    v.SAMPLE_IPV6_RESPONSE,
]
STREAM = b"".join(FRAMES)


def test_whole_stream_at_once() -> None:
    deframer = StreamDeframer()
    assert deframer.feed(STREAM) == FRAMES
    assert deframer.buffered == 0


def test_every_split_point() -> None:
    for cut in range(len(STREAM) + 1):
        deframer = StreamDeframer()
        frames = deframer.feed(STREAM[:cut]) + deframer.feed(STREAM[cut:])
        assert frames == FRAMES, cut
        assert deframer.buffered == 0


def test_byte_by_byte() -> None:
    deframer = StreamDeframer()
    frames: list[bytes] = []
    for i in range(len(STREAM)):
        frames += deframer.feed(STREAM[i : i + 1])
        assert deframer.buffered <= max(len(f) for f in FRAMES)
    assert frames == FRAMES


def test_partial_input_is_buffered() -> None:
    deframer = StreamDeframer()
    message = stun_message(b"x" * 10)
    assert deframer.feed(message[:7]) == []
    assert deframer.buffered == 7
    assert deframer.feed(memoryview(message[7:])) == [message]


def test_frames_decode() -> None:
    for frame in StreamDeframer().feed(STREAM):
        if stun.is_stun(frame):
            stun.parse(frame)
        else:
            assert channeldata.decode(frame, stream=True).channel >= 0x4000


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x80",  # leading bits 10: fails on the first byte
        b"\xff\xff\xff\xff",
        b"\x50\x00\x00\x00",  # reserved channel range
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"POST / HTTP/1.1\r\n",
        struct.pack("!HHI", 1, 2, stun.MAGIC_COOKIE),  # STUN length not a multiple of 4
        struct.pack("!HHI", 1, 0, 0x12345678),  # bad cookie
    ],
)
def test_garbage_raises_and_poisons(garbage: bytes) -> None:
    deframer = StreamDeframer()
    assert deframer.feed(FRAMES[0]) == [FRAMES[0]]
    with pytest.raises(stun.StunError):
        deframer.feed(garbage)
    with pytest.raises(stun.StunError):
        deframer.feed(FRAMES[0])


def test_max_frame_size() -> None:
    deframer = StreamDeframer(max_frame_size=64)
    assert deframer.feed(channeldata.encode(0x4000, bytes(60), pad=True))
    with pytest.raises(stun.StunError, match="exceeds"):
        deframer.feed(channeldata.encode(0x4000, bytes(61), pad=True)[:4])
    with pytest.raises(stun.StunError, match="exceeds"):
        StreamDeframer(max_frame_size=64).feed(stun_message(bytes(48))[:4])
    with pytest.raises(ValueError, match="at least"):
        StreamDeframer(max_frame_size=19)


@settings(deadline=None, max_examples=150)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.integers(0x4000, 0x4FFF), st.binary(max_size=70)).map(
                lambda t: channeldata.encode(t[0], t[1], pad=True)
            ),
            st.binary(max_size=70).map(stun_message),
        ),
        max_size=8,
    ),
    st.lists(st.integers(1, 60), min_size=1, max_size=30),
)
def test_random_chunking(frames: list[bytes], sizes: list[int]) -> None:
    stream = b"".join(frames)
    deframer = StreamDeframer()
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        out += deframer.feed(stream[pos : pos + size])
        pos += size
        i += 1
    assert out == frames
    assert deframer.buffered == 0


@settings(deadline=None, max_examples=300)
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_fuzz_random_bytes(chunks: list[bytes]) -> None:
    deframer = StreamDeframer(max_frame_size=1024)
    total = 0
    try:
        for chunk in chunks:
            for frame in deframer.feed(chunk):
                total += len(frame)
                assert stun.is_stun(frame) or channeldata.is_channeldata(frame)
    except stun.StunError:
        return
    assert total + deframer.buffered == sum(len(c) for c in chunks)
