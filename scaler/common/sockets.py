"""Binding listening sockets ourselves: port 0 picks a free port we can read back, and a
bind error surfaces at start-up (as :class:`OSError`) rather than inside a server."""

from __future__ import annotations

import ipaddress
import socket


def family_of(host: str) -> socket.AddressFamily:
    """IPv6 for an address with a colon, else IPv4."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_tcp(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host:port``."""
    return socket.create_server((host, port), family=family_of(host), backlog=backlog)


#: Made non-blocking by socket() itself where the platform can (Linux): one system call
#: less per socket, and the relay opens one per allocation.
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port``; an IPv6 one is IPv6 only."""
    family = family_of(host)
    sock = socket.socket(family, socket.SOCK_DGRAM | _NONBLOCK)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        if not _NONBLOCK:
            sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP literal, or ``localhost``) is only reachable from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
