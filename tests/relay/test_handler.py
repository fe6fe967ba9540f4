"""The request handler, pure: parsed messages in, response bytes out, effects into fakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.allocation import (
    Address,
    Allocation,
    AllocationTable,
    ClientAddress,
    Lifetimes,
    Payload,
)
from relay.core.auth import Authenticator, long_term_key, rest_credentials, rest_password
from relay.core.credentials import Credentials
from relay.core.handler import RequestHandler, canonical_ip
from relay.core.peer_policy import PeerPolicy
from relay.proto import stun, turn
from relay.proto.stun import FAMILY_IPV4, FAMILY_IPV6, Message, MessageBuilder, MessageClass
from scaler.wire import DeleteReason

NOW = 1000.0  # monotonic
WALL = 1_763_701_000.0
REALM = "test"
USERS = (("alice", "wonderland"), ("bob", "builder"))
SECRET = "rest-secret"
CLIENT = ("198.51.100.7", 40000)
PEER = ("192.0.2.10", 5000)


@dataclass
class FakeEndpoint:
    address: Address
    sent: list[tuple[bytes, Address]] = field(default_factory=list)
    closed: bool = False

    def sendto(self, data: Payload, peer: Address, /) -> int:
        raise AssertionError("the handler never sends ChannelData")

    def send(self, data: bytes, peer: Address) -> None:
        self.sent.append((data, peer))

    def attach(self, allocation: Allocation) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeRelays:
    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.port = 50000
        self.open_calls: list[dict[str, Any]] = []
        self.tokens: dict[bytes, FakeEndpoint] = {}

    def _next(self, port: int | None = None) -> FakeEndpoint | None:
        if self.capacity <= 0:
            return None
        self.capacity -= 1
        self.port += 2
        return FakeEndpoint(("203.0.113.1", self.port if port is None else port))

    def open(self, family: int, *, even_port: bool, dont_fragment: bool) -> FakeEndpoint | None:
        self.open_calls.append({"family": family, "even": even_port, "df": dont_fragment})
        return self._next()

    def reserve_pair(
        self, family: int, *, dont_fragment: bool, now: float
    ) -> tuple[FakeEndpoint, bytes] | None:
        endpoint = self._next()
        if endpoint is None:
            return None
        token = b"T" * 8
        self.tokens[token] = FakeEndpoint(("203.0.113.1", endpoint.address[1] + 1))
        return endpoint, token

    def claim(
        self, token: bytes, family: int, *, dont_fragment: bool, now: float
    ) -> FakeEndpoint | None:
        return self.tokens.pop(token, None)


@dataclass
class Recorder:
    created: list[Allocation] = field(default_factory=list)
    deleted: list[tuple[Allocation, str]] = field(default_factory=list)

    def allocation_created(self, allocation: Allocation) -> None:
        self.created.append(allocation)

    def allocation_deleted(self, allocation: Allocation, reason: DeleteReason) -> None:
        self.deleted.append((allocation, reason))


@dataclass
class Link:
    transport: str = "udp"
    local: Address = ("203.0.113.1", 3478)

    def sendto(self, data: Payload, client: ClientAddress, /) -> object:
        raise AssertionError("the handler answers through its return value")

    def attach(self, allocation: Allocation) -> None:
        pass

    def detach(self, allocation: Allocation) -> None:
        pass


def make_handler(
    *,
    policy: PeerPolicy | None = None,
    relays: FakeRelays | None = None,
    table: AllocationTable | None = None,
    relay_family: int = FAMILY_IPV4,
) -> tuple[RequestHandler, FakeRelays, Recorder]:
    relays = FakeRelays() if relays is None else relays
    recorder = Recorder()
    store = Credentials(REALM, USERS, [SECRET])
    handler = RequestHandler(
        table=AllocationTable() if table is None else table,
        authenticator=Authenticator(store),
        policy=PeerPolicy() if policy is None else policy,
        relays=relays,
        lifecycle=recorder,
        relay_family=relay_family,
    )
    return handler, relays, recorder


class Client:
    """Drives one 5-tuple through a handler the way a real client would."""

    def __init__(
        self,
        handler: RequestHandler,
        username: str = "alice",
        password: str = "wonderland",
        *,
        client: Any = CLIENT,
        link: Link | None = None,
    ) -> None:
        self.handler = handler
        self.username = username
        self.key = long_term_key(username, REALM, password)
        self.client = client
        self.link = Link() if link is None else link
        self.now = NOW
        self.wall = WALL

    def send(self, data: bytes) -> Message | None:
        response = self.handler.handle(
            stun.parse(data), self.link, self.client, self.now, self.wall
        )
        return None if response is None else stun.parse(response)

    def builder(
        self,
        method: int,
        attributes: list[tuple[int, bytes]] | None = None,
        peers: tuple[Address, ...] = (),
        cls: MessageClass = MessageClass.REQUEST,
    ) -> MessageBuilder:
        builder = MessageBuilder(method, cls)
        for attr_type, value in attributes or []:
            builder.add(attr_type, value)
        for peer in peers:
            builder.add_xor_address(turn.XOR_PEER_ADDRESS, peer[0], peer[1])
        return builder

    def signed(self, builder: MessageBuilder, nonce: str | None = None) -> bytes:
        if nonce is None:
            nonce = self.handler.auth.nonces.issue((self.client[0], self.client[1]), self.wall)
        builder.add_text(stun.USERNAME, self.username)
        builder.add_text(stun.REALM, REALM)
        builder.add_text(stun.NONCE, nonce)
        return builder.encode(integrity_key=self.key, fingerprint=True)

    def request(
        self,
        method: int,
        attributes: list[tuple[int, bytes]] | None = None,
        peers: tuple[Address, ...] = (),
    ) -> Message:
        response = self.send(self.signed(self.builder(method, attributes, peers)))
        assert response is not None
        return response

    def allocate(self, *extra: tuple[int, bytes]) -> Message:
        attributes = [(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17)), *extra]
        return self.request(turn.ALLOCATE, attributes)


def code(response: Message | None) -> int:
    """200 for a success, else the ERROR-CODE."""
    assert response is not None
    if response.cls is MessageClass.SUCCESS:
        return 200
    error = response.get_error_code()
    assert error is not None
    return error.code


def signed_by(response: Message, key: bytes) -> bool:
    return stun.verify_integrity(response, key)


# --- STUN --------------------------------------------------------------------------------------


def test_binding_needs_no_auth_and_reports_the_client_address() -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    response = client.send(MessageBuilder(stun.BINDING, MessageClass.REQUEST).encode())
    assert response is not None and response.cls is MessageClass.SUCCESS
    assert response.get_xor_address() == CLIENT
    assert not response.has(stun.FINGERPRINT)


def test_binding_over_ipv6_4_tuple_address() -> None:
    handler, _, _ = make_handler()
    client = Client(handler, client=("2001:db8::7", 4000, 0, 0))
    response = client.send(MessageBuilder(stun.BINDING, MessageClass.REQUEST).encode())
    assert response is not None and response.get_xor_address() == ("2001:db8::7", 4000)


def test_fingerprint_is_echoed() -> None:
    handler, _, _ = make_handler()
    data = MessageBuilder(stun.BINDING, MessageClass.REQUEST).encode(fingerprint=True)
    response = handler.handle(stun.parse(data), Link(), CLIENT, NOW, WALL)
    assert response is not None and stun.verify_fingerprint(response)


def test_unknown_comprehension_required_attribute_is_420() -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    builder = client.builder(turn.ALLOCATE, [(0x0077, b"\x00" * 4), (0x8077, b"")])
    response = client.send(builder.encode())
    assert code(response) == 420
    assert response is not None and response.get_unknown_attributes() == (0x0077,)


def test_unknown_method_is_400_and_responses_are_ignored() -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    assert code(client.send(client.builder(0x0FF).encode())) == 400
    success = MessageBuilder(turn.ALLOCATE, MessageClass.SUCCESS).encode()
    assert client.send(success) is None


# --- authentication ----------------------------------------------------------------------------


def test_first_request_is_challenged_with_realm_and_nonce() -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    response = client.send(client.builder(turn.ALLOCATE).encode())
    assert code(response) == 401
    assert response is not None
    assert response.get_text(stun.REALM) == REALM
    assert response.get_text(stun.NONCE)
    assert not response.has(stun.MESSAGE_INTEGRITY)
    assert recorder.created == []


def test_wrong_password_is_401_with_a_new_challenge() -> None:
    handler, _, _ = make_handler()
    client = Client(handler, password="wrong")
    response = client.allocate()
    assert code(response) == 401 and response.get_text(stun.NONCE)


def test_stale_nonce_is_438() -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    nonce = handler.auth.nonces.issue(CLIENT, WALL - 10_000)
    builder = client.builder(
        turn.ALLOCATE, [(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17))]
    )
    response = client.send(client.signed(builder, nonce))
    assert code(response) == 438 and response is not None and response.get_text(stun.NONCE)


def test_missing_username_with_integrity_is_400() -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    data = client.builder(turn.ALLOCATE).encode(integrity_key=client.key)
    assert code(client.send(data)) == 400


def test_rest_credentials_work_until_they_expire_refresh_included() -> None:
    handler, _, _ = make_handler()
    username, password = rest_credentials(SECRET, "carol", WALL, ttl=60)
    client = Client(handler, username, password)
    assert code(client.allocate()) == 200
    assert code(client.request(turn.REFRESH)) == 200
    client.wall = WALL + 61  # the credential expired; the nonce is still fresh
    assert code(client.request(turn.REFRESH)) == 401
    expired_user, expired_password = rest_credentials(SECRET, "dave", WALL - 120, ttl=60)
    assert code(Client(handler, expired_user, expired_password).allocate()) == 401


def test_rotated_rest_secret_is_accepted() -> None:
    relays, recorder = FakeRelays(), Recorder()
    handler = RequestHandler(
        table=AllocationTable(),
        authenticator=Authenticator(Credentials(REALM, (), ["new", "old"])),
        policy=PeerPolicy(),
        relays=relays,
        lifecycle=recorder,
    )
    username = f"{int(WALL) + 60}:erin"
    client = Client(handler, username, rest_password("old", username))
    assert code(client.allocate()) == 200


# --- Allocate ----------------------------------------------------------------------------------


def test_allocate_success_is_signed_and_complete() -> None:
    handler, relays, recorder = make_handler()
    client = Client(handler)
    response = client.allocate()
    assert code(response) == 200
    assert signed_by(response, client.key)
    assert stun.verify_fingerprint(response)
    relayed = response.get_xor_address(turn.XOR_RELAYED_ADDRESS)
    assert relayed is not None and relayed.host == "203.0.113.1"
    assert response.get_xor_address() == CLIENT
    lifetime = response.get(turn.LIFETIME)
    assert lifetime is not None and turn.decode_lifetime(lifetime) == 600
    assert len(recorder.created) == 1
    allocation = recorder.created[0]
    assert allocation.username == "alice" and allocation.transport == "udp"
    assert allocation.client_addr == CLIENT and allocation.link is client.link
    assert relays.open_calls == [{"family": FAMILY_IPV4, "even": False, "df": False}]


def test_allocate_lifetime_is_capped() -> None:
    handler, _, _ = make_handler(table=AllocationTable(lifetimes=Lifetimes(max_lifetime=1200)))
    response = Client(handler).allocate((turn.LIFETIME, turn.encode_lifetime(99_999)))
    value = response.get(turn.LIFETIME)
    assert value is not None and turn.decode_lifetime(value) == 1200


def test_retransmitted_allocate_gets_the_same_answer_a_new_one_437() -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    builder = client.builder(
        turn.ALLOCATE, [(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17))]
    )
    data = client.signed(builder)
    first = handler.handle(stun.parse(data), client.link, CLIENT, NOW, WALL)
    again = handler.handle(stun.parse(data), client.link, CLIENT, NOW + 1, WALL + 1)
    assert first == again
    assert len(recorder.created) == 1
    response = client.allocate()
    assert code(response) == 437 and signed_by(response, client.key)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ([], 400),
        ([(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(6))], 442),
        ([(turn.REQUESTED_TRANSPORT, b"\x11")], 400),
        (
            [
                (turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17)),
                (turn.REQUESTED_ADDRESS_FAMILY, turn.encode_address_family(FAMILY_IPV6)),
            ],
            440,
        ),
        (
            [
                (turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17)),
                (turn.REQUESTED_ADDRESS_FAMILY, b"\x07\x00\x00\x00"),
            ],
            440,
        ),
        (
            [
                (turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17)),
                (turn.REQUESTED_ADDRESS_FAMILY, turn.encode_address_family(FAMILY_IPV4)),
                (turn.ADDITIONAL_ADDRESS_FAMILY, turn.encode_address_family(FAMILY_IPV6)),
            ],
            400,
        ),
        (
            [
                (turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17)),
                (turn.RESERVATION_TOKEN, b"12345678"),
                (turn.EVEN_PORT, turn.encode_even_port(False)),
            ],
            400,
        ),
        (
            [
                (turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17)),
                (turn.RESERVATION_TOKEN, b"unknown!"),
            ],
            508,
        ),
        (
            [
                (turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17)),
                (turn.LIFETIME, b"\x00"),
            ],
            400,
        ),
    ],
)
def test_allocate_errors(attributes: list[tuple[int, bytes]], expected: int) -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    response = client.request(turn.ALLOCATE, attributes)
    assert code(response) == expected
    assert signed_by(response, client.key)
    assert recorder.created == []
    assert len(handler.table) == 0


def test_additional_family_gets_address_error_code() -> None:
    handler, _, _ = make_handler()
    response = Client(handler).allocate(
        (turn.ADDITIONAL_ADDRESS_FAMILY, turn.encode_address_family(FAMILY_IPV6))
    )
    assert code(response) == 200
    value = response.get(turn.ADDRESS_ERROR_CODE)
    assert value is not None
    assert turn.decode_address_error_code(value)[:2] == (FAMILY_IPV6, 440)


def test_ipv6_relay_serves_ipv6_allocations_only() -> None:
    handler, relays, _ = make_handler(relay_family=FAMILY_IPV6)
    client = Client(handler)
    assert code(client.allocate()) == 440  # IPv4 is the default family
    ipv6 = client.allocate((turn.REQUESTED_ADDRESS_FAMILY, turn.encode_address_family(FAMILY_IPV6)))
    assert code(ipv6) == 200
    assert relays.open_calls[-1]["family"] == FAMILY_IPV6


def test_dont_fragment_and_even_port_reach_the_relay_factory() -> None:
    handler, relays, _ = make_handler()
    response = Client(handler).allocate(
        (turn.DONT_FRAGMENT, b""), (turn.EVEN_PORT, turn.encode_even_port(False))
    )
    assert code(response) == 200
    assert relays.open_calls == [{"family": FAMILY_IPV4, "even": True, "df": True}]


def test_reservation_token_round_trip() -> None:
    handler, _, _ = make_handler()
    first = Client(handler).allocate((turn.EVEN_PORT, turn.encode_even_port(True)))
    assert code(first) == 200
    token = first.get(turn.RESERVATION_TOKEN)
    relayed = first.get_xor_address(turn.XOR_RELAYED_ADDRESS)
    assert token is not None and relayed is not None
    second_client = Client(handler, client=("198.51.100.7", 40001))
    second = second_client.allocate((turn.RESERVATION_TOKEN, token))
    assert code(second) == 200
    assert second.get_xor_address(turn.XOR_RELAYED_ADDRESS) == (relayed.host, relayed.port + 1)
    third = Client(handler, client=("198.51.100.7", 40002)).allocate(
        (turn.RESERVATION_TOKEN, token)
    )
    assert code(third) == 508  # a token is good once


def test_draining_refuses_new_allocations_with_403() -> None:
    handler, _, _ = make_handler()
    existing = Client(handler)
    assert code(existing.allocate()) == 200
    handler.draining = True
    assert code(Client(handler, client=("198.51.100.8", 1)).allocate()) == 403
    assert code(existing.request(turn.REFRESH)) == 200  # existing ones keep working


def test_quotas_answer_486() -> None:
    handler, _, _ = make_handler(table=AllocationTable(user_quota=1, total_quota=2))
    assert code(Client(handler).allocate()) == 200
    assert code(Client(handler, client=("198.51.100.7", 2)).allocate()) == 486
    assert code(Client(handler, "bob", "builder", client=("198.51.100.7", 3)).allocate()) == 200
    rest_user = f"{int(WALL) + 60}:zed"
    rest = Client(handler, rest_user, rest_password(SECRET, rest_user), client=("10.0.0.1", 4))
    assert code(rest.allocate()) == 486  # total


def test_no_relay_port_is_508() -> None:
    handler, _, recorder = make_handler(relays=FakeRelays(capacity=1))
    assert code(Client(handler).allocate()) == 200
    assert code(Client(handler, client=("198.51.100.7", 2)).allocate()) == 508
    assert len(recorder.created) == 1


# --- Refresh -----------------------------------------------------------------------------------


def test_refresh_without_allocation_is_437() -> None:
    handler, _, _ = make_handler()
    assert code(Client(handler).request(turn.REFRESH)) == 437


def test_refresh_by_another_user_on_the_same_5_tuple_is_441() -> None:
    handler, _, _ = make_handler()
    assert code(Client(handler).allocate()) == 200
    assert code(Client(handler, "bob", "builder").request(turn.REFRESH)) == 441


def test_refresh_zero_deletes() -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    client.allocate()
    response = client.request(turn.REFRESH, [(turn.LIFETIME, turn.encode_lifetime(0))])
    assert code(response) == 200
    value = response.get(turn.LIFETIME)
    assert value is not None and turn.decode_lifetime(value) == 0
    assert [reason for _, reason in recorder.deleted] == ["refresh_zero"]
    assert len(handler.table) == 0
    assert code(client.request(turn.REFRESH)) == 437


def test_refresh_family_mismatch_is_443() -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    client.allocate()
    family = (turn.REQUESTED_ADDRESS_FAMILY, turn.encode_address_family(FAMILY_IPV6))
    assert code(client.request(turn.REFRESH, [family])) == 443


def test_refresh_extends_the_lifetime() -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    client.allocate()
    client.now = NOW + 500
    assert code(client.request(turn.REFRESH)) == 200
    assert handler.expire(NOW + 700) == []
    assert len(handler.expire(NOW + 1100)) == 1
    assert [reason for _, reason in recorder.deleted] == ["expired"]


# --- CreatePermission / ChannelBind / Send -----------------------------------------------------


def test_create_permission_installs_every_peer() -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    client.allocate()
    response = client.request(turn.CREATE_PERMISSION, peers=(PEER, ("192.0.2.11", 1)))
    assert code(response) == 200 and signed_by(response, client.key)
    assert set(recorder.created[0].permissions) == {"192.0.2.10", "192.0.2.11"}


def test_create_permission_without_peer_is_400() -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    client.allocate()
    assert code(client.request(turn.CREATE_PERMISSION)) == 400


def test_create_permission_refused_by_policy_installs_nothing() -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    client.allocate()
    response = client.request(turn.CREATE_PERMISSION, peers=(PEER, ("169.254.169.254", 80)))
    assert code(response) == 403 and signed_by(response, client.key)
    assert recorder.created[0].permissions == {}


def test_peer_of_the_other_family_is_443() -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    client.allocate()
    assert code(client.request(turn.CREATE_PERMISSION, peers=(("2001:db8::1", 5),))) == 443
    channel = [(turn.CHANNEL_NUMBER, turn.encode_channel_number(0x4000))]
    assert code(client.request(turn.CHANNEL_BIND, channel, (("2001:db8::1", 5),))) == 443


def test_channel_bind_rules() -> None:
    handler, _, recorder = make_handler()
    client = Client(handler)
    client.allocate()

    def bind(channel: int, peer: Address) -> int:
        attrs = [(turn.CHANNEL_NUMBER, turn.encode_channel_number(channel))]
        return code(client.request(turn.CHANNEL_BIND, attrs, (peer,)))

    assert bind(0x4000, PEER) == 200
    assert bind(0x4000, PEER) == 200  # refresh
    assert bind(0x4001, PEER) == 400  # peer bound to another channel
    assert bind(0x4000, ("192.0.2.11", 1)) == 400  # channel bound to another peer
    assert bind(0x3FFF, ("192.0.2.12", 1)) == 400
    assert bind(0x5000, ("192.0.2.12", 1)) == 400  # RFC 8656 range only by default
    assert bind(0x4002, ("127.0.0.1", 1)) == 403
    assert code(client.request(turn.CHANNEL_BIND, peers=(PEER,))) == 400
    allocation = recorder.created[0]
    assert allocation.channels[0x4000].peer == PEER
    assert PEER[0] in allocation.permissions


def test_legacy_channel_range() -> None:
    handler, _, _ = make_handler()
    handler.channel_max = 0x7FFF
    client = Client(handler)
    client.allocate()
    attrs = [(turn.CHANNEL_NUMBER, turn.encode_channel_number(0x7ABC))]
    assert code(client.request(turn.CHANNEL_BIND, attrs, (PEER,))) == 200


def test_channel_bind_checks_the_port_against_allow_rules() -> None:
    handler, _, _ = make_handler(policy=PeerPolicy(["192.0.2.0/24:5000-5010"]))
    client = Client(handler)
    client.allocate()
    attrs = [(turn.CHANNEL_NUMBER, turn.encode_channel_number(0x4000))]
    assert code(client.request(turn.CHANNEL_BIND, attrs, (("192.0.2.10", 6000),))) == 403
    assert code(client.request(turn.CHANNEL_BIND, attrs, (PEER,))) == 200
    # CreatePermission ignores ports (RFC 8656 §9): the host is allowed on some port.
    assert code(client.request(turn.CREATE_PERMISSION, peers=(("192.0.2.10", 6000),))) == 200
    assert code(client.request(turn.CREATE_PERMISSION, peers=(("198.51.100.1", 1),))) == 403


def test_send_indication_needs_a_permission_and_the_policy() -> None:
    handler, _, recorder = make_handler(policy=PeerPolicy(["192.0.2.0/24:5000"]))
    client = Client(handler)
    client.allocate()
    endpoint = recorder.created[0].relay
    assert isinstance(endpoint, FakeEndpoint)

    def send(peer: Address, data: bytes) -> None:
        builder = client.builder(
            turn.SEND, [(turn.DATA, data)], (peer,), cls=MessageClass.INDICATION
        )
        assert client.send(builder.encode()) is None

    send(PEER, b"no permission yet")
    client.request(turn.CREATE_PERMISSION, peers=(PEER,))
    send(PEER, b"hello")
    send(("192.0.2.10", 5001), b"port not allowed")
    send(("2001:db8::1", 5000), b"other family")
    no_data = client.builder(turn.SEND, peers=(PEER,), cls=MessageClass.INDICATION)
    assert client.send(no_data.encode()) is None
    assert endpoint.sent == [(b"hello", PEER)]


def test_send_from_a_tuple_without_allocation_is_dropped() -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    builder = client.builder(turn.SEND, [(turn.DATA, b"x")], (PEER,), cls=MessageClass.INDICATION)
    assert client.send(builder.encode()) is None


def test_tcp_and_udp_five_tuples_are_distinct() -> None:
    handler, _, recorder = make_handler()
    assert code(Client(handler).allocate()) == 200
    assert code(Client(handler, link=Link("tcp")).allocate()) == 200
    assert sorted(a.transport for a in recorder.created) == ["tcp", "udp"]


def test_delete_and_expire_report_reasons() -> None:
    handler, _, recorder = make_handler()
    Client(handler).allocate()
    Client(handler, client=("198.51.100.7", 2)).allocate()
    first, second = recorder.created
    assert handler.delete(first, "error")
    assert not handler.delete(first, "error")
    assert handler.expire(NOW + 600) == [second]
    assert [reason for _, reason in recorder.deleted] == ["error", "expired"]


def test_canonical_ip_matches_socket_text() -> None:
    assert canonical_ip("192.0.2.1") == "192.0.2.1"
    assert canonical_ip("2001:DB8:0:0::1") == "2001:db8::1"
    assert canonical_ip("::ffff:7f00:1") == "::ffff:127.0.0.1"
    assert canonical_ip("fe80::1%eth0") == "fe80::1"


# --- fuzzing -----------------------------------------------------------------------------------

FUZZ_METHODS = [
    stun.BINDING,
    turn.ALLOCATE,
    turn.REFRESH,
    turn.CREATE_PERMISSION,
    turn.CHANNEL_BIND,
    turn.SEND,
    0x0FF,
]
FUZZ_TYPES = [
    *sorted(turn.KNOWN_ATTRIBUTES - {stun.MESSAGE_INTEGRITY, stun.FINGERPRINT}),
    0x7777,
    0xC001,
]


def _answer_is_stun(answer: bytes | None) -> None:
    if answer is not None:
        stun.parse(answer)


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(FUZZ_METHODS),
    cls=st.sampled_from(list(MessageClass)),
    attributes=st.lists(st.tuples(st.sampled_from(FUZZ_TYPES), st.binary(max_size=24)), max_size=6),
    sign=st.booleans(),
    allocated=st.booleans(),
)
def test_fuzzed_messages_never_raise_out_of_the_handler(
    method: int,
    cls: MessageClass,
    attributes: list[tuple[int, bytes]],
    sign: bool,
    allocated: bool,
) -> None:
    handler, _, _ = make_handler(relays=FakeRelays(capacity=3))
    client = Client(handler)
    if allocated:
        client.allocate()
        client.request(turn.CHANNEL_BIND, [(turn.CHANNEL_NUMBER, b"\x40\x00\x00\x00")], (PEER,))
    builder = client.builder(method, attributes, cls=cls)
    data = client.signed(builder) if sign else builder.encode()
    try:
        message = stun.parse(data)
    except stun.StunError:
        return
    _answer_is_stun(handler.handle(message, client.link, CLIENT, NOW, WALL))


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 200), value=st.integers(0, 255), which=st.integers(0, 3))
def test_mutated_requests_never_raise_out_of_the_handler(
    position: int, value: int, which: int
) -> None:
    handler, _, _ = make_handler()
    client = Client(handler)
    client.allocate()
    requests = [
        client.builder(turn.REFRESH, [(turn.LIFETIME, turn.encode_lifetime(60))]),
        client.builder(turn.CREATE_PERMISSION, peers=(PEER, ("2001:db8::1", 1))),
        client.builder(
            turn.CHANNEL_BIND, [(turn.CHANNEL_NUMBER, turn.encode_channel_number(0x4001))], (PEER,)
        ),
        client.builder(
            turn.ALLOCATE, [(turn.REQUESTED_TRANSPORT, turn.encode_requested_transport(17))]
        ),
    ]
    data = bytearray(client.signed(requests[which]))
    data[position % len(data)] = value
    try:
        message = stun.parse(bytes(data))
    except stun.StunError:
        return
    _answer_is_stun(handler.handle(message, client.link, CLIENT, NOW, WALL))
