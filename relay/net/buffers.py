"""The process's receive buffers: one per direction, reused by every read.

Every read is handled completely before the next one, on the loop's only thread, so one buffer
per direction serves every socket and no datagram costs an allocation:

* :data:`LISTENER`: datagrams from clients (:mod:`.udp`); ChannelData goes on to the peer as a
  slice of it.
* :data:`TLS`: bytes from TLS clients (:mod:`.tls_stream`), handed on to OpenSSL's memory BIO
  (a copy) before the next read.
* :data:`RELAY`: datagrams from peers (:mod:`.relayed`), received at :data:`RELAY_OFFSET`
  (through :data:`RELAY_RX`) so that the ChannelData or Data indication header
  (RFC 8656 §12.7, §11.3) is written in front of the data and the message leaves without a
  copy.
"""

from __future__ import annotations

from typing import Final

from relay.proto.indication import MAX_HEADER_SIZE

__all__ = [
    "BATCH",
    "LISTENER",
    "LISTENER_VIEW",
    "MAX_DATAGRAM",
    "RELAY",
    "RELAY_OFFSET",
    "RELAY_RX",
    "RELAY_VIEW",
    "TLS",
    "TLS_VIEW",
]

#: Datagrams read per readable event before yielding to the loop.
BATCH: Final = 64
#: Bytes a UDP datagram can carry.
MAX_DATAGRAM: Final = 65536
#: Where peer data lands in :data:`RELAY`: room for the longest header in front, a Data
#: indication's (20 STUN header + 24 XOR-PEER-ADDRESS (IPv6) + 4 DATA header).
RELAY_OFFSET: Final = MAX_HEADER_SIZE

#: Peer -> client: the header goes in front of the data, up to 3 bytes of padding after it.
RELAY: Final = bytearray(RELAY_OFFSET + MAX_DATAGRAM + 4)
RELAY_VIEW: Final = memoryview(RELAY)
#: Where a relayed socket receives: :data:`RELAY` from :data:`RELAY_OFFSET` on.
RELAY_RX: Final = RELAY_VIEW[RELAY_OFFSET : RELAY_OFFSET + MAX_DATAGRAM]
#: Client -> relay datagrams.
LISTENER: Final = bytearray(MAX_DATAGRAM)
LISTENER_VIEW: Final = memoryview(LISTENER)
#: TLS client -> relay bytes: what one read of a TLS connection takes at most (several records).
TLS: Final = bytearray(256 * 1024)
TLS_VIEW: Final = memoryview(TLS)
