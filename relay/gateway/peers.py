"""The peer allow-list of a relay configured by routes, kept current while it runs.

:class:`Peers` is the pure part: the StaticService rules plus the current addresses of each
routed Service, composed into an exclusive :class:`relay.core.peer_policy.PeerPolicy` (no route,
or a Service without addresses, means no peer, never any peer).

:class:`ServiceResolver` finds the Services' addresses through DNS (``NAME.NAMESPACE.svc``:
the pod IPs of a headless Service, else its ClusterIP) at start and every
``--resolve-interval``. A name that no longer exists resolves to nothing; a lookup that fails
for another reason (a timeout, a DNS server in trouble) keeps the last addresses, so a DNS
hiccup never cuts a media server off. Live mode feeds :class:`Peers` from EndpointSlices
instead. Peers that leave stay reachable for the allocations already talking to them
(:meth:`relay.core.handler.RequestHandler.set_policy`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

from relay.core.peer_policy import PeerPolicy, PeerRule
from relay.gateway.translate import ServiceBackend
from scaler.common import logs, runtime

__all__ = ["Peers", "Resolve", "ServiceResolver", "resolve_dns"]

log = logs.get("relay.gateway")

#: ``name -> addresses``; raises OSError (or TimeoutError) when the answer is unknown.
Resolve = Callable[[str], Awaitable[frozenset[str]]]

LOOKUP_TIMEOUT: Final = 5.0
_GONE: Final = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)


async def resolve_dns(name: str) -> frozenset[str]:
    """The name's IP addresses through the system resolver; empty when it does not exist."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        if exc.errno in _GONE:
            return frozenset()
        raise
    return frozenset(str(ipaddress.ip_address(str(info[4][0]).partition("%")[0])) for info in infos)


class Peers:
    """Static rules plus the addresses of routed Services -> the relay's peer policy."""

    def __init__(
        self,
        static: Iterable[PeerRule],
        services: Iterable[ServiceBackend],
        *,
        allow_loopback: bool = False,
    ) -> None:
        self.static = tuple(static)
        self.services = tuple(services)
        self.allow_loopback = allow_loopback
        #: Addresses by Service (``(namespace, name)``), as last learnt.
        self.addresses: dict[tuple[str, str], frozenset[str]] = {}

    def update(self, addresses: Mapping[tuple[str, str], frozenset[str]]) -> bool:
        """Take new addresses for some Services; True if the policy changes."""
        changed = False
        for key, found in addresses.items():
            if self.addresses.get(key, frozenset()) != found:
                self.addresses[key] = found
                changed = True
        return changed

    def rules(self) -> list[PeerRule]:
        rules = list(self.static)
        for backend in self.services:
            rules.extend(backend.rules(self.addresses.get((backend.namespace, backend.name), ())))
        return list(dict.fromkeys(rules))

    def policy(self) -> PeerPolicy:
        return PeerPolicy(self.rules(), allow_loopback=self.allow_loopback, exclusive=True)


class ServiceResolver:
    """Resolves the Services of :class:`Peers` now and every ``interval`` seconds; calls
    ``changed`` when their addresses differ from what it last knew."""

    def __init__(
        self,
        peers: Peers,
        changed: Callable[[], None],
        *,
        interval: float,
        resolve: Resolve = resolve_dns,
        timeout: float = LOOKUP_TIMEOUT,
    ) -> None:
        self.peers = peers
        self.changed = changed
        self.interval = interval
        self.resolve = resolve
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.peers.services and self._task is None:
            self._task = asyncio.create_task(self._run(), name="service-resolver")

    async def stop(self) -> None:
        await runtime.cancel_and_wait(self._task)
        self._task = None

    async def refresh(self) -> None:
        """Look every Service up once and apply what changed."""
        keys = sorted({(b.namespace, b.name) for b in self.peers.services})
        answers = await asyncio.gather(*(self._lookup(ns, name) for ns, name in keys))
        found = {
            key: answer for key, answer in zip(keys, answers, strict=True) if answer is not None
        }
        if self.peers.update(found):
            self.changed()

    async def _lookup(self, namespace: str, name: str) -> frozenset[str] | None:
        host = ServiceBackend(namespace, name).dns_name
        try:
            return await asyncio.wait_for(self.resolve(host), self.timeout)
        except (OSError, TimeoutError) as exc:
            log.warning(
                "service lookup failed, keeping its last addresses",
                service=host,
                error=f"{type(exc).__name__}: {exc}",
            )
            return None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug must not stop the refreshes
                log.exception("service lookups failed")
            await asyncio.sleep(self.interval)
