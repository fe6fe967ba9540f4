"""The client -> peer half of the packet path for TCP, TLS and DTLS clients: one ChannelData
message (RFC 8656 §12) sent on to its channel's peer from the allocation's relayed socket.

The UDP listener does the same steps inline in its batch loop, where the byte counts go to
the stats once per batch rather than once per message.
"""

from __future__ import annotations

from relay.core.allocation import Allocation
from relay.core.stats import RelayStats
from relay.proto.channeldata import unpack_header


def channel_data_to_peer(
    allocation: Allocation | None, message: bytes | memoryview, stats: RelayStats
) -> None:
    """Relay ``message``'s data to its channel's peer; dropped without an allocation, with an
    unbound channel or a length past the message's end (§12.4), or when the send fails."""
    if allocation is None:
        return
    channel, length = unpack_header(message)
    end = 4 + length
    if end > len(message):
        return
    binding = allocation.channels.get(channel)
    if binding is None:
        return
    try:
        allocation.relay.sendto(memoryview(message)[4:end], binding.peer)
    except OSError:
        return
    allocation.peer_tx += length
    stats.peer_tx += length
