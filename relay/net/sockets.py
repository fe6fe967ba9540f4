"""Socket options of the relay's UDP sockets, on top of :mod:`scaler.common.sockets` binding.

* Buffer sizes: listeners ask for :data:`LISTENER_BUFFER`, relayed sockets for
  :data:`RELAYED_BUFFER` (the kernel caps both at ``net.core.[rw]mem_max``).
* DONT-FRAGMENT (RFC 8656 §14.9): relayed sockets of allocations that asked for it send with
  the DF bit (Linux only, best effort).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
from typing import Final

from scaler.common import sockets

__all__ = [
    "LISTENER_BUFFER",
    "RELAYED_BUFFER",
    "bind_listener",
    "bind_relayed",
    "port_taken",
    "set_dont_fragment",
]

#: Socket buffer sizes asked for a listener (the kernel caps them at net.core.[rw]mem_max).
LISTENER_BUFFER: Final = 4 << 20
#: For each relayed socket: room for a burst from the peer (kernel memory, used on demand).
RELAYED_BUFFER: Final = 512 << 10
# IP_MTU_DISCOVER / IP_PMTUDISC_DO and the IPv6 twins (Linux values; not in the socket module).
_IP_MTU_DISCOVER: Final = 10
_IPV6_MTU_DISCOVER: Final = 23
_PMTUDISC_DO: Final = 2
_LINUX = sys.platform.startswith("linux")


def _grow_buffers(sock: socket.socket, size: int) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def set_dont_fragment(sock: socket.socket) -> None:
    """Send with the DF bit (DONT-FRAGMENT, RFC 8656 §14.9); Linux only, best effort."""
    if not _LINUX:
        return
    if sock.family == socket.AF_INET6:
        level, option = socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER
    else:
        level, option = socket.IPPROTO_IP, _IP_MTU_DISCOVER
    with contextlib.suppress(OSError):
        sock.setsockopt(level, option, _PMTUDISC_DO)


def port_taken(exc: OSError) -> bool:
    """Whether a bind failed because another socket holds the port (try another one)."""
    return exc.errno in (errno.EADDRINUSE, errno.EACCES)


def _bind(host: str, port: int, size: int, dont_fragment: bool) -> socket.socket:
    sock = sockets.bind_udp(host, port)
    try:
        _grow_buffers(sock, size)
        if dont_fragment:
            set_dont_fragment(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listener(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket for a TURN listener on ``host:port`` (port 0 picks one)."""
    return _bind(host, port, LISTENER_BUFFER, False)


def bind_relayed(host: str, port: int, *, dont_fragment: bool) -> socket.socket:
    """A non-blocking UDP socket for a relayed transport address ``host:port``."""
    return _bind(host, port, RELAYED_BUFFER, dont_fragment)
