"""Replacing the peer policy and the credentials while allocations live: new permissions
follow the new policy, a peer it drops stays reachable for the allocations already holding a
permission for it; new allocations need the new credentials, existing ones keep theirs."""

from __future__ import annotations

from relay.core.allocation import Address
from relay.core.credentials import Credentials
from relay.core.peer_policy import PeerPolicy
from relay.proto import turn
from relay.proto.stun import MessageClass
from tests.relay.test_handler import PEER, REALM, Client, FakeEndpoint, code, make_handler

OTHER_CLIENT = ("198.51.100.8", 40001)
CHANNEL = [(turn.CHANNEL_NUMBER, turn.encode_channel_number(0x4000))]


def send(client: Client, peer: Address, data: bytes) -> None:
    builder = client.builder(turn.SEND, [(turn.DATA, data)], (peer,), cls=MessageClass.INDICATION)
    assert client.send(builder.encode()) is None


def test_a_dropped_peer_stays_reachable_for_allocations_that_hold_a_permission() -> None:
    handler, _, recorder = make_handler(policy=PeerPolicy(["192.0.2.0/24:5000"], exclusive=True))
    talking, newcomer = Client(handler), Client(handler, client=OTHER_CLIENT)
    talking.allocate()
    assert code(talking.request(turn.CREATE_PERMISSION, peers=(PEER,))) == 200
    endpoint = recorder.created[0].relay
    assert isinstance(endpoint, FakeEndpoint)

    handler.set_policy(PeerPolicy([], exclusive=True))  # the media server is leaving
    send(talking, PEER, b"still there")
    assert endpoint.sent == [(b"still there", PEER)]
    assert code(talking.request(turn.CREATE_PERMISSION, peers=(PEER,))) == 200  # refresh
    assert code(talking.request(turn.CHANNEL_BIND, CHANNEL, (PEER,))) == 200
    # Only on the ports the policy that let it in allowed, and only that peer.
    assert code(talking.request(turn.CHANNEL_BIND, CHANNEL, (("192.0.2.10", 5001),))) == 403
    assert code(talking.request(turn.CREATE_PERMISSION, peers=(("192.0.2.11", 5000),))) == 403
    # Another allocation gets the new policy at once.
    newcomer.allocate()
    assert code(newcomer.request(turn.CREATE_PERMISSION, peers=(PEER,))) == 403


def test_a_retained_peer_is_gone_once_its_permission_lapses() -> None:
    handler, _, recorder = make_handler(policy=PeerPolicy(["192.0.2.0/24"], exclusive=True))
    client = Client(handler)
    client.allocate()
    client.request(turn.CREATE_PERMISSION, peers=(PEER,))
    handler.set_policy(PeerPolicy(["198.51.100.0/24"], exclusive=True))
    client.now += turn.PERMISSION_LIFETIME + 1
    client.request(turn.REFRESH)  # keeps the allocation, not the permission
    assert code(client.request(turn.CREATE_PERMISSION, peers=(PEER,))) == 403
    handler.expire(client.now)
    handler.set_policy(PeerPolicy(["198.51.100.0/24"], exclusive=True))
    assert recorder.created[0].retained is None


def test_a_peer_that_comes_back_and_leaves_again() -> None:
    first = PeerPolicy(["192.0.2.10:5000"], exclusive=True)
    handler, _, recorder = make_handler(policy=first)
    client = Client(handler)
    client.allocate()
    client.request(turn.CREATE_PERMISSION, peers=(PEER,))
    allocation = recorder.created[0]
    handler.set_policy(PeerPolicy([], exclusive=True))
    assert allocation.retained == {PEER[0]: first}
    handler.set_policy(PeerPolicy([], exclusive=True))  # still gone: still the first one's
    assert allocation.retained == {PEER[0]: first}
    wider = PeerPolicy(["192.0.2.0/24"], exclusive=True)
    handler.set_policy(wider)  # back: nothing to retain
    assert allocation.retained is None
    handler.set_policy(PeerPolicy([], exclusive=True))
    assert allocation.retained == {PEER[0]: wider}
    assert code(client.request(turn.CHANNEL_BIND, CHANNEL, (("192.0.2.10", 6000),))) == 200


def test_an_exclusive_policy_without_rules_permits_nothing() -> None:
    handler, _, _ = make_handler(policy=PeerPolicy([], exclusive=True))
    client = Client(handler)
    client.allocate()
    assert code(client.request(turn.CREATE_PERMISSION, peers=(PEER,))) == 403
    assert not PeerPolicy([], exclusive=True).permits("192.0.2.1", 1)
    assert PeerPolicy([]).permits("192.0.2.1", 1)
    assert PeerPolicy([], allow_loopback=True, exclusive=True).permits("127.0.0.1", 1)
    assert "exclusive=True" in repr(PeerPolicy([], exclusive=True))


def test_existing_allocations_keep_the_credentials_they_were_created_with() -> None:
    handler, _, _ = make_handler()
    call = Client(handler, "alice", "wonderland")
    assert code(call.allocate()) == 200
    handler.auth.store = Credentials(REALM, [("alice", "rotated")])
    assert code(call.request(turn.REFRESH)) == 200
    assert code(call.request(turn.CREATE_PERMISSION, peers=(PEER,))) == 200
    newcomer = Client(handler, "alice", "wonderland", client=OTHER_CLIENT)
    assert code(newcomer.allocate()) == 401
    rotated = Client(handler, "alice", "rotated", client=OTHER_CLIENT)
    assert code(rotated.allocate()) == 200
    # The same user's new password works on the old allocation too.
    assert code(Client(handler, "alice", "rotated").request(turn.REFRESH)) == 200
    # And a stale nonce under the former credentials is 438, so the client retries.
    stale = call.builder(turn.REFRESH)
    nonce = handler.auth.nonces.issue(call.client, call.wall - 3600)
    assert code(call.send(call.signed(stale, nonce))) == 438
