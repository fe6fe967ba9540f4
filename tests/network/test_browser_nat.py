"""Real browsers across a real NAT: Chromium behind nftables masquerade calls a Chromium media
peer that only the relay's cluster side reaches (topology: tests/netns.py).

The client browser runs as users run it (mDNS host candidates); the media browser exposes
real host candidates and has a fake camera, as a media server with a routable address would.
Both are given ``iceServers`` explicitly: the relay only, or nothing at all.
"""

from __future__ import annotations

import functools
from typing import Final

import pytest
from playwright.async_api import Page

from tests import netns
from tests.browser import FAKE_MEDIA_DEVICES, REAL_HOST_CANDIDATES, chromium
from tests.network.stack import Stack, stack
from tests.network.webrtc import Call, by_type, call, candidates, packets_received, selected_pair
from tests.relay.servers import PASSWORD, USER
from tests.waiting import eventually

MEDIA_FLAGS: Final = (*REAL_HOST_CANDIDATES, *FAKE_MEDIA_DEVICES)
#: Connectivity checks that no one answers: Chromium gives the call up within this
#: (about 15 s here).
FAILURE_WITHIN: Final = 60.0
#: RTP packets each side must receive: a second or two of 15-25 fps video.
PACKETS: Final = 30


def turn_url(relay: Stack, transport: str) -> str:
    host, port = relay.turn
    return f"turn:{host}:{port}?transport={transport}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_browser_behind_nat_calls_the_media_peer_through_the_relay(
    relay: Stack, transport: str
) -> None:
    """Data channel echo and video both ways, over TURN on UDP or TCP (RFC 8656 §3.1); the
    client's selected pair is its relay candidate (the relay's cluster address, mapped from
    the NAT's public one) against the media server's host candidate."""
    turn = [{"urls": [turn_url(relay, transport)], "username": USER, "credential": PASSWORD}]
    topology = relay.topology
    async with (
        chromium(netns=topology.client.name) as client,
        chromium(netns=topology.media.name, extra_args=MEDIA_FLAGS) as media,
    ):
        session = await call(client, media, caller_ice=turn, callee_ice=[])
        assert ("host", netns.MEDIA) in candidates(session.answer)
        await talk(session)
        report = await session.stats(session.caller)
        local, remote = selected_pair(report)
        assert (local["candidateType"], local["address"]) == ("relay", netns.RELAY_CLUSTER)
        assert local["relayProtocol"] == transport
        # The relay candidate's related address is the XOR-MAPPED-ADDRESS: the NAT's.
        assert local["relatedAddress"] == netns.NAT_PUBLIC
        assert (remote["candidateType"], remote["address"]) == ("host", netns.MEDIA)
        gathered = by_type(report, "local-candidate")
        reflexive = {entry["address"] for entry in gathered if entry["candidateType"] == "srflx"}
        # Chromium also sends a STUN Binding to a TURN server it reaches over UDP.
        assert reflexive == ({netns.NAT_PUBLIC} if transport == "udp" else set())
        # Only the relay was asked, for STUN as for TURN: no other server appears.
        servers = {entry["url"] for entry in gathered if "url" in entry}
        host, port = relay.turn
        assert servers <= {f"stun:{host}:{port}", turn_url(relay, transport)}
    ended = relay.relay.wait_for("allocation ended")
    assert ended["client"].startswith(f"{netns.NAT_PUBLIC}:")
    assert ended["relayed"].startswith(f"{netns.RELAY_CLUSTER}:")
    assert ended["transport"] == transport


async def talk(session: Call) -> None:
    """The call connects, the data channel echoes, and video arrives on both sides."""
    await session.wait_for_state("connected")
    messages = [f"hello {index}" for index in range(5)]
    assert await session.echo(messages) == [f"echo:{message}" for message in messages]
    for page, side in ((session.callee, "media"), (session.caller, "client")):
        await eventually(
            functools.partial(_at_least, page, PACKETS), f"{side} receives {PACKETS} packets"
        )


async def _at_least(page: Page, count: int) -> bool:
    return await packets_received(page) >= count


async def test_behind_a_nat_that_blocks_udp_the_call_goes_over_turn_tcp() -> None:
    """A firewall that lets no UDP out (nat_topology(block_udp=True)): given both TURN
    transports, Chromium's UDP attempts are dropped and the call runs over TURN on TCP."""
    with netns.nat_topology(block_udp=True) as topology, stack(topology) as relay:
        urls = [turn_url(relay, "udp"), turn_url(relay, "tcp")]
        turn = [{"urls": urls, "username": USER, "credential": PASSWORD}]
        async with (
            chromium(netns=topology.client.name) as client,
            chromium(netns=topology.media.name, extra_args=MEDIA_FLAGS) as media,
        ):
            session = await call(client, media, caller_ice=turn, callee_ice=[])
            await talk(session)
            local, _ = selected_pair(await session.stats(session.caller))
            assert (local["candidateType"], local["relayProtocol"]) == ("relay", "tcp")
        assert topology.blocked_udp() > 0  # the UDP attempts were made, and dropped


async def test_without_turn_the_nat_blocks_the_call(topology: netns.NatTopology) -> None:
    """The same call with no iceServers (real host candidates on both sides, so nothing hides
    an address) never connects: the client LAN and the media server cannot reach each other."""
    async with (
        chromium(netns=topology.client.name, extra_args=REAL_HOST_CANDIDATES) as client,
        chromium(netns=topology.media.name, extra_args=MEDIA_FLAGS) as media,
    ):
        session = await call(client, media, caller_ice=[], callee_ice=[])
        assert set(candidates(session.offer)) == {("host", netns.CLIENT)}
        assert set(candidates(session.answer)) == {("host", netns.MEDIA)}
        with pytest.raises(AssertionError, match="connection failed"):
            await session.wait_for_state("connected", within=FAILURE_WITHIN)
        assert await packets_received(session.callee) == 0
        assert await packets_received(session.caller) == 0
