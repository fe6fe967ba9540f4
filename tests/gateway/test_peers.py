"""The allow-list from routes: static rules plus the looked-up addresses of routed Services.

There is no DNS server on the test machines, so the resolver is injected: a dict of names to
addresses, where a missing name is NXDOMAIN and an OSError value a lookup that failed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping

import pytest

from relay.core.peer_policy import parse_peer_rule
from relay.gateway.peers import Peers, ServiceResolver, resolve_dns
from relay.gateway.translate import ServiceBackend
from tests.waiting import eventually

SFU = ServiceBackend("apps", "sfu", 5000, 5100)
TURN = ServiceBackend("apps", "sfu", 3478, 3478)
OTHER = ServiceBackend("media", "recorder")


class FakeDns:
    def __init__(self, answers: Mapping[str, frozenset[str] | OSError]) -> None:
        self.answers = dict(answers)
        self.asked: list[str] = []

    async def __call__(self, name: str) -> frozenset[str]:
        self.asked.append(name)
        answer = self.answers.get(name, frozenset())
        if isinstance(answer, OSError):
            raise answer
        return answer


def test_peers_compose_an_exclusive_policy() -> None:
    peers = Peers([parse_peer_rule("192.0.2.0/24")], [SFU, TURN, OTHER])
    policy = peers.policy()
    assert policy.exclusive and policy.permits("192.0.2.1", 9)
    assert not policy.permits("10.1.0.1", 5000)  # no address known yet
    assert peers.update({("apps", "sfu"): frozenset({"10.1.0.1"})})
    assert not peers.update({("apps", "sfu"): frozenset({"10.1.0.1"})})
    policy = peers.policy()
    assert policy.permits("10.1.0.1", 5050) and policy.permits("10.1.0.1", 3478)
    assert not policy.permits("10.1.0.1", 4000)
    assert not Peers([], []).policy().permits("10.1.0.1", 1)


async def test_the_resolver_looks_up_each_service_once_and_keeps_answers_on_failure() -> None:
    dns = FakeDns({"sfu.apps.svc": frozenset({"10.1.0.1", "10.1.0.2"})})
    peers = Peers([], [SFU, TURN, OTHER])
    changes: list[int] = []
    resolver = ServiceResolver(peers, lambda: changes.append(1), interval=3600, resolve=dns)
    await resolver.refresh()
    assert sorted(dns.asked) == ["recorder.media.svc", "sfu.apps.svc"]
    assert changes == [1]
    assert peers.addresses[("apps", "sfu")] == {"10.1.0.1", "10.1.0.2"}
    assert peers.addresses.get(("media", "recorder"), frozenset()) == frozenset()
    dns.answers["sfu.apps.svc"] = OSError("temporary failure in name resolution")
    await resolver.refresh()
    assert changes == [1] and peers.addresses[("apps", "sfu")] == {"10.1.0.1", "10.1.0.2"}
    del dns.answers["sfu.apps.svc"]  # the Service is gone: NXDOMAIN
    await resolver.refresh()
    assert changes == [1, 1] and peers.addresses[("apps", "sfu")] == frozenset()


async def test_a_lookup_that_hangs_is_bounded() -> None:
    async def hang(name: str) -> frozenset[str]:
        await asyncio.sleep(3600)
        return frozenset()

    peers = Peers([], [SFU])
    peers.update({("apps", "sfu"): frozenset({"10.1.0.1"})})
    resolver = ServiceResolver(peers, lambda: None, interval=3600, resolve=hang, timeout=0.05)
    await resolver.refresh()
    assert peers.addresses[("apps", "sfu")] == {"10.1.0.1"}


async def test_the_resolver_runs_periodically_and_stops() -> None:
    dns = FakeDns({"sfu.apps.svc": frozenset({"10.1.0.1"})})
    peers = Peers([], [SFU])
    resolver = ServiceResolver(peers, lambda: None, interval=0.01, resolve=dns)
    resolver.start()
    await eventually(lambda: len(dns.asked) >= 3, "three rounds of lookups")
    await resolver.stop()
    asked = len(dns.asked)
    await asyncio.sleep(0.05)
    assert len(dns.asked) == asked
    idle = ServiceResolver(Peers([], []), lambda: None, interval=0.01, resolve=dns)
    idle.start()  # no Service routed: nothing to look up
    await idle.stop()


async def test_the_system_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await resolve_dns("127.0.0.1") == {"127.0.0.1"}
    assert "127.0.0.1" in await resolve_dns("localhost") or "::1" in await resolve_dns("localhost")
    loop = asyncio.get_running_loop()

    async def answer(error: int, *args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(error, "from the test")

    monkeypatch.setattr(loop, "getaddrinfo", lambda *a, **k: answer(socket.EAI_NONAME))
    assert await resolve_dns("gone.apps.svc") == frozenset()  # NXDOMAIN: no addresses
    monkeypatch.setattr(loop, "getaddrinfo", lambda *a, **k: answer(socket.EAI_AGAIN))
    with pytest.raises(OSError):
        await resolve_dns("sfu.apps.svc")  # unknown: the caller keeps what it had
