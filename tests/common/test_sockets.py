"""Binding sockets ourselves (scaler.common.sockets)."""

from __future__ import annotations

import socket

import pytest

from scaler.common import sockets


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_udp_socket_is_bound_non_blocking(host: str) -> None:
    sock = sockets.bind_udp(host, 0)
    try:
        assert sock.type == socket.SOCK_DGRAM  # the non-blocking flag is not part of its type
        assert sock.family == sockets.family_of(host)
        assert not sock.getblocking()
        assert sock.gettimeout() == 0.0
        with pytest.raises(BlockingIOError):
            sock.recvfrom(16)  # nothing queued: an answer at once, never a wait
        if host == "::1":
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        sock.close()


def test_a_udp_port_in_use_is_an_error_at_bind() -> None:
    first = sockets.bind_udp("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            sockets.bind_udp("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()
