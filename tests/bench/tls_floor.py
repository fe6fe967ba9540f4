"""The least a stock Python TLS server does per connection: the floor beside ``turnscale
relay``'s TLS figures in :mod:`tests.bench.tls_bench`.

uvloop's own server (``loop.create_server(..., ssl=context)``: accept, transport and the
TLS layer all in uvloop's compiled code) with the relay's server context (the same
certificate, protocol versions, ciphers, ALPN and tickets, from :func:`relay.core.certs.load_pair`)
and a protocol that does nothing. What it costs is what Python's ``ssl`` and uvloop's TLS
layer cost any asyncio server before its own code runs. The relay does not use that layer
(its own transport, :mod:`relay.net.tls_stream`, drives the same ``ssl`` objects), so the
relay against this floor is its TLS driver and its TURN connection against the cheapest
stock way to serve TLS from asyncio.

Run as ``python -m tests.bench.tls_floor CERT KEY PORT``: it prints ``ready`` once listening
on 127.0.0.1:PORT and serves until killed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import uvloop

from relay.core import certs
from relay.core.certs import TlsFiles

#: Seconds a handshake may take, as the relay's default deadline.
HANDSHAKE_TIMEOUT = 10.0


class Idle(asyncio.Protocol):
    """Holds the connection, reads nothing of it; the client ends it."""

    def data_received(self, data: bytes) -> None:
        pass


async def serve(cert: Path, key: Path, port: int) -> None:
    context = certs.load_pair(TlsFiles(cert, key), time.time()).context
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Idle,
        "127.0.0.1",
        port,
        ssl=context,
        ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        backlog=1024,
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit("usage: python -m tests.bench.tls_floor CERT KEY PORT")
    cert, key, port = argv
    uvloop.run(serve(Path(cert), Path(key), int(port)))


if __name__ == "__main__":
    main(sys.argv[1:])
