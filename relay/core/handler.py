"""The TURN server's request logic (RFC 8656 §5-§12, RFC 8489), without sockets.

:meth:`RequestHandler.handle` takes one parsed STUN message from a client, the link it came
on (a UDP listener or a TCP connection), the client's address and the time, and returns the
response bytes (or None). Its effects go through injected interfaces, so tests drive it with
plain values and fakes:

* :class:`RelayFactory` opens a relayed endpoint (a UDP socket in ``--relay-ports``) for a new
  allocation, or returns None when no port is free (508);
* :class:`relay.core.allocation.RelayEndpoint` sends a Send indication's data to a peer and is
  closed on deletion;
* :class:`Lifecycle` hears of every allocation created and deleted (counters, events, the
  summary log line, closing the endpoint).

What it answers, in the order RFC 8656 gives:

* Nothing, for any message whose FINGERPRINT is present and wrong (RFC 8489 §7.3: "silently
  discarded"; §14.7), before anything else is looked at.
* Binding (RFC 8489 §6.3): XOR-MAPPED-ADDRESS, no authentication.
* Every TURN request: 420 for unknown comprehension-required attributes (with
  UNKNOWN-ATTRIBUTES), then the long-term credential checks (:mod:`relay.core.auth`: 401 with
  REALM and NONCE, 400, 438 for a stale nonce), then 437 when the 5-tuple has no allocation
  (or already has one, for Allocate) and 441 when the username is not the allocation's.
* Allocate (§7.2): 400 without REQUESTED-TRANSPORT, 442 for anything but UDP; DONT-FRAGMENT
  is honoured (the relayed socket sets DF); EVEN-PORT gives an even port, with the R bit the
  next port is reserved for 30 s under a RESERVATION-TOKEN, and an Allocate carrying that token
  gets it (an unknown or expired token: 508; a token with EVEN-PORT or
  REQUESTED-ADDRESS-FAMILY: 400); 440 for an address family other than the relay
  address's (REQUESTED-ADDRESS-FAMILY), and an ADDITIONAL-ADDRESS-FAMILY request gets the
  one family with ADDRESS-ERROR-CODE 440 for the other; 403 while draining; 486 over
  ``--user-quota`` or ``--total-quota``; 508 when no relay port is free. A retransmitted
  Allocate (same transaction ID) gets the same success.
* Refresh (§8.2): LIFETIME 0 deletes (reason ``refresh_zero``); 443 for a
  REQUESTED-ADDRESS-FAMILY that is not the allocation's.
* CreatePermission (§10.2): 400 without XOR-PEER-ADDRESS or with a peer on port 0 (no peer
  has port 0 and coturn refuses it too, though §9 ignores the port), 403 when the peer policy
  refuses any of the peers (checked first, so every refused form of an address gets 403
  whatever its family), 443 for a peer of the other family; nothing is installed unless all
  pass.
* Capacity: a CreatePermission with more than ``max_peers_per_request`` XOR-PEER-ADDRESS
  attributes is 400; one that would leave an allocation more than ``max_permissions`` live
  permissions, or a ChannelBind of a new channel beyond ``max_channels`` (or a new
  permission beyond the cap), is 508 Insufficient Capacity (§10.2, §12.2); refreshing what
  the allocation holds always works.
* ChannelBind (§12.2): 400 for a missing or out-of-range channel (0x4000..0x4FFF; RFC 5766's
  0x4000..0x7FFF with ``channel_max=0x7FFF``), a peer on port 0, or a channel or peer already
  bound otherwise; 403 and 443 as above (the policy with the peer's port).
* The relay's own endpoints (:attr:`RequestHandler.own`: its listeners and health address)
  are never a peer, whatever the policy or a retained permission says: CreatePermission
  (with the attribute's port) and ChannelBind get 403, a Send is dropped (RFC 8656 §17; no
  allocation nested inside another).
* Send indications (§11.2) are relayed when a permission exists and the policy permits the
  peer's address and port (never port 0); anything wrong drops them silently, as indications
  have no answer.

The credentials can be replaced while the relay runs (a rotated secret or password): a new
Allocate needs the new ones, and the requests of an existing allocation (Refresh,
CreatePermission, ChannelBind) are also accepted under the credentials it was created with,
so a call in progress is not cut by a rotation.

The peer policy can be replaced while the relay runs (:meth:`RequestHandler.set_policy`, when
routes or their endpoints change). A peer the new policy no longer lists stays reachable, on
the ports the old one allowed, for the allocations that hold a permission for it (so a call
set up through a media server that is going away keeps working): they may refresh that
permission, bind channels to it and send to it until they let the permission lapse. Every
other allocation gets the new policy at once.

Error responses after a successful authentication carry MESSAGE-INTEGRITY (clients discard
unsigned ones, RFC 8489 §9.2.5); FINGERPRINT is added when the request had one.
"""

from __future__ import annotations

import socket
from typing import Final, Protocol

from relay.core.allocation import (
    Address,
    Allocation,
    AllocationTable,
    ClientAddress,
    ClientLink,
    FiveTuple,
    RelayEndpoint,
    quota_key,
)
from relay.core.auth import Authenticator, AuthResult, AuthStatus
from relay.core.peer_policy import PeerPolicy, SelfEndpoints
from relay.proto import stun, turn
from relay.proto.channeldata import CHANNEL_MAX, CHANNEL_MIN
from relay.proto.stun import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    Message,
    MessageBuilder,
    MessageClass,
    StunError,
)
from scaler.wire import DeleteReason

__all__ = [
    "MAX_CHANNELS",
    "MAX_PEERS_PER_REQUEST",
    "MAX_PERMISSIONS",
    "Lifecycle",
    "RelayFactory",
    "RequestHandler",
    "canonical_ip",
    "family_of",
]

#: XOR-PEER-ADDRESS attributes one CreatePermission may carry (over it: 400). Browsers send
#: one per request; 16 leaves room for clients that batch a candidate list.
MAX_PEERS_PER_REQUEST: Final = 16
#: Permissions one allocation may hold at once (over it: 508). A call has a handful of remote
#: candidate addresses, an ICE restart or a mesh a few dozen; 256 is far beyond any browser
#: and bounds the memory and the expiry work one allocation can cost.
MAX_PERMISSIONS: Final = 256
#: Channels one allocation may hold at once (over it: 508): a browser binds one per remote
#: candidate it sends to, so well under the permission cap; RFC 8656 allows 4096.
MAX_CHANNELS: Final = 128

_TURN_METHODS: Final = frozenset(
    {turn.ALLOCATE, turn.REFRESH, turn.CREATE_PERMISSION, turn.CHANNEL_BIND}
)


class RelayFactory(Protocol):
    """Opens relayed endpoints."""

    def open(self, family: int, *, even_port: bool, dont_fragment: bool) -> RelayEndpoint | None:
        """A new endpoint of ``family`` (FAMILY_IPV4/IPV6), or None when no port is free."""
        ...

    def reserve_pair(
        self, family: int, *, dont_fragment: bool, now: float
    ) -> tuple[RelayEndpoint, bytes] | None:
        """An endpoint on an even port, with the next port reserved under the returned
        8-byte RESERVATION-TOKEN (RFC 8656 §7.2); None when no pair is free."""
        ...

    def claim(
        self, token: bytes, family: int, *, dont_fragment: bool, now: float
    ) -> RelayEndpoint | None:
        """The endpoint reserved under ``token``, or None for an unknown or expired token."""
        ...


class Lifecycle(Protocol):
    """Hears of allocations coming and going."""

    def allocation_created(self, allocation: Allocation) -> None:
        """``allocation`` was added to the table (its endpoint is open)."""
        ...

    def allocation_deleted(self, allocation: Allocation, reason: DeleteReason) -> None:
        """``allocation`` left the table for ``reason``; release what it holds."""
        ...


def family_of(host: str) -> int:
    """STUN address family of an IP literal (FAMILY_IPV4 / FAMILY_IPV6)."""
    return FAMILY_IPV6 if ":" in host else FAMILY_IPV4


def canonical_ip(host: str) -> str:
    """The text form sockets report (``inet_ntop``), so table keys match received addresses."""
    af = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.inet_ntop(af, socket.inet_pton(af, host.partition("%")[0]))


class RequestHandler:
    """Answers STUN/TURN requests and relays Send indications; see the module docstring."""

    def __init__(
        self,
        *,
        table: AllocationTable,
        authenticator: Authenticator,
        policy: PeerPolicy,
        relays: RelayFactory,
        lifecycle: Lifecycle,
        relay_family: int = FAMILY_IPV4,
        channel_max: int = CHANNEL_MAX,
        max_peers_per_request: int = MAX_PEERS_PER_REQUEST,
        max_permissions: int = MAX_PERMISSIONS,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self.table = table
        self.auth = authenticator
        self.policy = policy
        self.relays = relays
        self.lifecycle = lifecycle
        self.relay_family = relay_family
        #: 0x4FFF (RFC 8656), or 0x7FFF to take RFC 5766's channels too (``--legacy-channels``).
        self.channel_max = channel_max
        #: Caps (0 = none): XOR-PEER-ADDRESS per CreatePermission (400), live permissions and
        #: channels per allocation (508 Insufficient Capacity, RFC 8656 §10.2, §12.2).
        self.max_peers_per_request = max_peers_per_request
        self.max_permissions = max_permissions
        self.max_channels = max_channels
        #: While draining, new allocations are refused with 403.
        self.draining = False
        #: The relay's own listeners and health endpoint: never a peer, whatever the policy.
        self.own = SelfEndpoints()

    # -- entry points

    def handle(
        self, message: Message, link: ClientLink, client: ClientAddress, now: float, wall: float
    ) -> bytes | None:
        """Process one message from ``client`` (the address as the socket gave it) on ``link``.

        ``now`` is monotonic seconds (lifetimes), ``wall`` unix seconds (nonces, REST expiry).
        Returns the response to send back, or None.
        """
        if message.has(stun.FINGERPRINT) and not stun.verify_fingerprint(message):
            return None  # RFC 8489 §7.3, §14.7: a wrong FINGERPRINT is silently discarded
        cls = message.cls
        if cls is MessageClass.INDICATION:
            if message.method == turn.SEND:
                self._send_indication(message, link, client, now)
            return None
        if cls is not MessageClass.REQUEST:
            return None  # responses are not for a server
        fingerprint = message.has(stun.FINGERPRINT)
        method = message.method
        unknown = message.unknown_comprehension_required(turn.KNOWN_ATTRIBUTES)
        if unknown:
            builder = turn.error_response(message, 420).add_unknown_attributes(unknown)
            return builder.encode(fingerprint=fingerprint)
        address: Address = (client[0], client[1])
        if method == stun.BINDING:
            builder = MessageBuilder.success(message).add_xor_address(
                stun.XOR_MAPPED_ADDRESS, address[0], address[1]
            )
            return builder.encode(fingerprint=fingerprint)
        if method not in _TURN_METHODS:
            return turn.error_response(message, 400).encode(fingerprint=fingerprint)
        result = self.auth.check(message, address, wall)
        if result.status is AuthStatus.UNAUTHORIZED and method != turn.ALLOCATE:
            result = self._former_credentials(message, link, address, wall, result)
        if not result.ok or result.key is None or result.username is None:
            code = result.error_code or 401
            builder = turn.error_response(message, code)
            if result.wants_challenge:
                self.auth.add_challenge(builder, address, wall)
            return builder.encode(fingerprint=fingerprint)
        key, username = result.key, result.username
        five_tuple = FiveTuple(link.transport, address, link.local)
        allocation = self.table.get(five_tuple)
        if method == turn.ALLOCATE:
            return self._allocate(
                message=message,
                link=link,
                client=client,
                five_tuple=five_tuple,
                existing=allocation,
                username=username,
                key=key,
                now=now,
            )
        if allocation is None:
            return self._error(message, 437, key)
        if allocation.username != username:
            return self._error(message, 441, key)
        try:
            if method == turn.REFRESH:
                return self._refresh(message, allocation, key, now)
            if method == turn.CREATE_PERMISSION:
                return self._create_permission(message, allocation, key, now)
            return self._channel_bind(message, allocation, key, now)
        except StunError:
            return self._error(message, 400, key)

    def _former_credentials(
        self, message: Message, link: ClientLink, address: Address, wall: float, result: AuthResult
    ) -> AuthResult:
        """``result``, or the check under the credentials the 5-tuple's allocation was created
        with when the relay's have changed since."""
        allocation = self.table.get(FiveTuple(link.transport, address, link.local))
        if allocation is None or allocation.credentials in (None, self.auth.store):
            return result
        former = Authenticator(allocation.credentials, self.auth.nonces)
        checked = former.check(message, address, wall)
        return checked if checked.ok or checked.status is AuthStatus.STALE_NONCE else result

    def delete(self, allocation: Allocation, reason: DeleteReason) -> bool:
        """Delete an allocation for ``reason`` (connection closed, drain); False if gone."""
        if not self.table.remove(allocation):
            return False
        self.lifecycle.allocation_deleted(allocation, reason)
        return True

    def expire(self, now: float) -> list[Allocation]:
        """Run the table's expiry at ``now``; expired allocations are deleted (``expired``)."""
        expired = self.table.expire(now)
        for allocation in expired:
            self.lifecycle.allocation_deleted(allocation, "expired")
        return expired

    def set_policy(self, policy: PeerPolicy) -> None:
        """Apply a new peer policy now; peers it drops stay reachable for allocations that
        hold a permission for them (see the module docstring)."""
        old = self.policy
        self.policy = policy
        for allocation in self.table:
            before = allocation.retained or {}
            kept: dict[str, PeerPolicy] = {}
            for host in allocation.permissions:
                if policy.permits_host(host):
                    continue
                granted = before.get(host)
                if granted is None and old.permits_host(host):
                    granted = old
                if granted is not None:
                    kept[host] = granted
            allocation.retained = kept or None

    @staticmethod
    def _retained(allocation: Allocation, host: str, port: int | None, now: float) -> bool:
        """Whether ``host`` (canonical) is a peer a former policy let this allocation reach
        and it still holds a live permission for."""
        retained = allocation.retained
        if not retained:
            return False
        granted = retained.get(host)
        if granted is None or allocation.permissions.get(host, 0.0) <= now:
            return False
        return granted.permits_host(host) if port is None else granted.permits(host, port)

    def _reachable(self, allocation: Allocation, host: str, port: int | None, now: float) -> bool:
        """The policy's answer for ``host`` (and ``port``), or a retained permission's."""
        allowed = (
            self.policy.permits_host(host) if port is None else self.policy.permits(host, port)
        )
        if allowed or not allocation.retained:
            return allowed
        try:
            canonical = canonical_ip(host)
        except (OSError, ValueError):
            return False
        return self._retained(allocation, canonical, port, now)

    # -- responses

    @staticmethod
    def _signed(message: Message, builder: MessageBuilder, key: bytes) -> bytes:
        return builder.encode(integrity_key=key, fingerprint=message.has(stun.FINGERPRINT))

    def _error(self, message: Message, code: int, key: bytes) -> bytes:
        return self._signed(message, turn.error_response(message, code), key)

    # -- methods

    def _allocate(
        self,
        *,
        message: Message,
        link: ClientLink,
        client: ClientAddress,
        five_tuple: FiveTuple,
        existing: Allocation | None,
        username: str,
        key: bytes,
        now: float,
    ) -> bytes:
        if existing is not None:
            if (
                existing.username == username
                and existing.transaction_id == message.transaction_id
                and existing.allocate_response
            ):
                return existing.allocate_response  # a retransmission: same answer
            return self._error(message, 437, key)
        try:
            transport = message.get(turn.REQUESTED_TRANSPORT)
            if transport is None:
                return self._error(message, 400, key)
            if turn.decode_requested_transport(transport) != turn.TRANSPORT_UDP:
                return self._error(message, 442, key)
            dont_fragment = message.has(turn.DONT_FRAGMENT)
            even_value = message.get(turn.EVEN_PORT)
            reserve_next = even_value is not None and turn.decode_even_port(even_value)
            requested_family = message.get(turn.REQUESTED_ADDRESS_FAMILY)
            additional_family = message.get(turn.ADDITIONAL_ADDRESS_FAMILY)
            token_value = message.get(turn.RESERVATION_TOKEN)
            token: bytes | None = None
            if token_value is not None:
                if even_value is not None or requested_family is not None:
                    return self._error(message, 400, key)
                token = turn.decode_reservation_token(token_value)
            if requested_family is not None and additional_family is not None:
                return self._error(message, 400, key)
            family = FAMILY_IPV4
            if requested_family is not None:
                family = turn.decode_address_family(requested_family)
            if family not in (FAMILY_IPV4, FAMILY_IPV6) or family != self.relay_family:
                return self._error(message, 440, key)
            address_error: int | None = None
            if additional_family is not None:
                if turn.decode_address_family(additional_family) != FAMILY_IPV6:
                    return self._error(message, 400, key)
                address_error = FAMILY_IPV6  # dual allocation is not offered
            lifetime_value = message.get(turn.LIFETIME)
            requested = None if lifetime_value is None else turn.decode_lifetime(lifetime_value)
        except StunError:
            return self._error(message, 400, key)
        if self.draining:
            return self._error(message, 403, key)
        quota = quota_key(username, static=self.auth.store.is_static(username))
        units = 2 if reserve_next and token is None else 1
        if self.table.quota_exceeded(quota, now, claiming=token, units=units):
            return self._error(message, 486, key)
        lifetime = self.table.lifetimes.grant(requested)
        endpoint: RelayEndpoint | None
        issued: bytes | None = None
        if token is not None:
            endpoint = self.relays.claim(token, family, dont_fragment=dont_fragment, now=now)
            self.table.unreserved(token)
        elif reserve_next:
            pair = self.relays.reserve_pair(family, dont_fragment=dont_fragment, now=now)
            endpoint, issued = (None, None) if pair is None else pair
        else:
            endpoint = self.relays.open(
                family, even_port=even_value is not None, dont_fragment=dont_fragment
            )
        if endpoint is None:
            return self._error(message, 508, key)
        relayed = endpoint.address
        allocation = Allocation(
            five_tuple,
            username,
            family=family,
            created=now,
            lifetime=lifetime,
            transaction_id=message.transaction_id,
            relay=endpoint,
            link=link,
            client_addr=client,
            dont_fragment=dont_fragment,
            credentials=self.auth.store,
            quota=quota,
        )
        self.table.add(allocation)
        if issued is not None:
            self.table.reserved(issued, quota, now + turn.RESERVATION_LIFETIME)
        builder = (
            MessageBuilder.success(message)
            .add_xor_address(turn.XOR_RELAYED_ADDRESS, relayed[0], relayed[1])
            .add(turn.LIFETIME, turn.encode_lifetime(lifetime))
            .add_xor_address(stun.XOR_MAPPED_ADDRESS, five_tuple.client[0], five_tuple.client[1])
        )
        if issued is not None:
            builder.add(turn.RESERVATION_TOKEN, turn.encode_reservation_token(issued))
        if address_error is not None:
            builder.add(turn.ADDRESS_ERROR_CODE, turn.encode_address_error_code(address_error, 440))
        allocation.allocate_response = self._signed(message, builder, key)
        self.lifecycle.allocation_created(allocation)
        return allocation.allocate_response

    def _refresh(self, message: Message, allocation: Allocation, key: bytes, now: float) -> bytes:
        family = message.get(turn.REQUESTED_ADDRESS_FAMILY)
        if family is not None and turn.decode_address_family(family) != allocation.family:
            return self._error(message, 443, key)
        value = message.get(turn.LIFETIME)
        requested = None if value is None else turn.decode_lifetime(value)
        if requested == 0:
            self.delete(allocation, "refresh_zero")
            lifetime = 0
        else:
            lifetime = self.table.lifetimes.grant(requested)
            self.table.refresh(allocation, lifetime, now)
        builder = MessageBuilder.success(message).add(turn.LIFETIME, turn.encode_lifetime(lifetime))
        return self._signed(message, builder, key)

    def _peer(self, allocation: Allocation, peer: Address) -> Address | int:
        """The canonical peer address, or the error code to answer."""
        if family_of(peer[0]) != allocation.family:
            return 443
        try:
            return (canonical_ip(peer[0]), peer[1])
        except (OSError, ValueError):
            return 400

    def _create_permission(
        self, message: Message, allocation: Allocation, key: bytes, now: float
    ) -> bytes:
        peers = message.get_xor_addresses(turn.XOR_PEER_ADDRESS)
        if not peers or 0 < self.max_peers_per_request < len(peers):
            return self._error(message, 400, key)
        if any(peer.port == 0 for peer in peers):
            return self._error(message, 400, key)  # as coturn: no peer has port 0
        hosts: list[str] = []
        for peer in peers:
            if self.own.covers(peer.host, peer.port) or not self._reachable(
                allocation, peer.host, None, now
            ):
                return self._error(message, 403, key)
            checked = self._peer(allocation, peer)
            if isinstance(checked, int):
                return self._error(message, checked, key)
            hosts.append(checked[0])
        if self._over_permissions(allocation, hosts, now):
            return self._error(message, 508, key)
        for host in hosts:
            self.table.add_permission(allocation, host, now)
        return self._signed(message, MessageBuilder.success(message), key)

    def _channel_bind(
        self, message: Message, allocation: Allocation, key: bytes, now: float
    ) -> bytes:
        channel_value = message.get(turn.CHANNEL_NUMBER)
        peer = message.get_xor_address(turn.XOR_PEER_ADDRESS)
        if channel_value is None or peer is None:
            return self._error(message, 400, key)
        channel = turn.decode_channel_number(channel_value)
        if not CHANNEL_MIN <= channel <= self.channel_max or peer.port == 0:
            return self._error(message, 400, key)
        if self.own.covers(peer.host, peer.port) or not self._reachable(
            allocation, peer.host, peer.port, now
        ):
            return self._error(message, 403, key)
        checked = self._peer(allocation, peer)
        if isinstance(checked, int):
            return self._error(message, checked, key)
        if self._over_channels(allocation, channel, checked, now):
            return self._error(message, 508, key)
        if not self.table.bind_channel(allocation, channel, checked, now):
            return self._error(message, 400, key)
        return self._signed(message, MessageBuilder.success(message), key)

    def _over_permissions(self, allocation: Allocation, hosts: list[str], now: float) -> bool:
        """Whether installing ``hosts`` would leave more than ``max_permissions`` live."""
        cap, held = self.max_permissions, allocation.permissions
        if not cap or len(held) + len(hosts) <= cap:
            return False
        live = {host for host, expiry in held.items() if expiry > now}
        return len(live | set(hosts)) > cap

    def _over_channels(
        self, allocation: Allocation, channel: int, peer: Address, now: float
    ) -> bool:
        """Whether binding a new ``channel`` would exceed ``max_channels`` live channels (or
        its permission ``max_permissions``); refreshing a binding never does."""
        bound = allocation.channels.get(channel)
        if bound is not None and bound.expiry > now:
            return False
        cap = self.max_channels
        if cap and len(allocation.channels) >= cap:
            live = sum(1 for b in allocation.channels.values() if b.expiry > now)
            if live >= cap:
                return True
        return self._over_permissions(allocation, [peer[0]], now)

    def _send_indication(
        self, message: Message, link: ClientLink, client: ClientAddress, now: float
    ) -> None:
        allocation = self.table.get(FiveTuple(link.transport, (client[0], client[1]), link.local))
        if allocation is None or message.unknown_comprehension_required(turn.KNOWN_ATTRIBUTES):
            return
        try:
            peer = message.get_xor_address(turn.XOR_PEER_ADDRESS)
        except StunError:
            return
        data = message.get(turn.DATA)
        if peer is None or data is None or peer.port == 0:
            return
        checked = self._peer(allocation, peer)
        if isinstance(checked, int) or checked[0] not in allocation.permissions:
            return
        if self.own.covers(checked[0], checked[1]):
            return
        if self.policy.permits_address(checked) or self._retained(
            allocation, checked[0], checked[1], now
        ):
            allocation.relay.send(data, checked)
