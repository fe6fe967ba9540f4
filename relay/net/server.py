"""Running the relay: bind listeners, expire state, drain on SIGTERM, shut down in order.

:class:`RelayServer` wires the pure parts (:mod:`relay.core`: the allocation table, the
request handler, the authenticator over :class:`relay.core.credentials.Credentials`, the peer
policy, the port pool) to the sockets of :mod:`relay.net.udp`, :mod:`relay.net.tcp`,
:mod:`relay.net.tls`, :mod:`relay.net.dtls` and :mod:`relay.net.relayed` and to the health
endpoints of :mod:`relay.net.health`. The relayed sockets are built first, then the handler
that opens them. It is the handler's :class:`relay.core.handler.Lifecycle`: every allocation
created or deleted passes through it (listener index, relayed socket, counters and events in
:class:`relay.core.stats.RelayStats`, one summary log line at the end).

One task expires allocations, permissions and channels (:meth:`RelayServer.sweep`, every
``sweep_interval`` seconds), unclaimed port reservations (RFC 8656 §7.2), closes TCP
connections and DTLS sessions idle without an allocation, and aborts TCP and TLS connections
still there :data:`relay.net.tcp.TCP_CLOSE_GRACE` seconds after their close.

Drain (:func:`serve`, signals through :class:`scaler.common.runtime.StopSignals`): the first
SIGTERM or SIGINT refuses new allocations (403) while existing ones keep working; ``/ready``
stays 200 (reporting ``draining``) unless ``--drain-ready-status=not-ready``
(:mod:`relay.net.health` says why); it exits when none are left or after ``--drain-timeout``
(the rest are deleted with reason ``drained``). A second signal ends the drain at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from aiohttp import web

from relay.config import SECURE_TRANSPORTS, Listen, RelayConfig
from relay.core.admission import TcpAdmission
from relay.core.allocation import Allocation, AllocationTable, Lifetimes
from relay.core.auth import Authenticator, CredentialStore
from relay.core.certs import CertError, TlsFiles
from relay.core.credentials import Credentials
from relay.core.handler import RequestHandler, family_of
from relay.core.peer_policy import PeerPolicy, SelfEndpoints
from relay.core.ports import PortPool
from relay.core.stats import RelayStats
from relay.net import health
from relay.net.dtls import DtlsListener
from relay.net.dtls_cookies import CookieJar
from relay.net.relayed import RelaySockets
from relay.net.sockets import bind_listener
from relay.net.tcp import TCP_CLOSE_GRACE, TCP_IDLE_TIMEOUT, TcpConnection
from relay.net.tls import TLS_POLL_INTERVAL, TlsConnection, TlsContexts, TlsListener
from relay.net.udp import UdpListener
from relay.proto.channeldata import CHANNEL_MAX
from relay.proto.framing import LEGACY_CHANNEL_MAX
from relay.reporting.pusher import make_pusher
from scaler.common import logs, runtime, sockets
from scaler.common.flags import HostPort
from scaler.wire import DeleteReason

__all__ = ["RelayServer", "StartupError", "serve"]

log = logs.get("relay")
#: The stdlib logger behind ``log``: asking it whether info is on is cheap, while a structlog
#: call below the level still runs every processor before the level drops it.
_stdlib_log = logging.getLogger("relay")

Stream = TypeVar("Stream", bound=TcpConnection)

#: What owns an open listener's socket.
_Handle = UdpListener | asyncio.Server | TlsListener | DtlsListener

#: Seconds between expiry sweeps: objects outlive their lifetime by at most this much.
SWEEP_INTERVAL = 1.0


class StartupError(Exception):
    """A listener or the health endpoint could not be bound; the message says which."""


def _bind_tcp(address: HostPort, what: str) -> socket.socket:
    try:
        return sockets.bind_tcp(address.host, address.port)
    except OSError as exc:
        raise StartupError(f"{what} {address}: {exc.strerror or exc}") from None


def _address(host_port: tuple[str, int]) -> str:
    host, port = host_port[0], host_port[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RelayServer:
    """One relay process's listeners, state and health endpoints."""

    def __init__(
        self,
        config: RelayConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sweep_interval: float = SWEEP_INTERVAL,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        tcp_close_grace: float = TCP_CLOSE_GRACE,
        tls_poll_interval: float = TLS_POLL_INTERVAL,
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall = wall
        self.sweep_interval = sweep_interval
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_close_grace = tcp_close_grace
        self.tls_poll_interval = tls_poll_interval
        self.stats = RelayStats(started_at=wall(), started_monotonic=clock())
        self.table = AllocationTable(
            lifetimes=Lifetimes(max_lifetime=config.max_lifetime),
            user_quota=config.user_quota,
            total_quota=config.total_quota,
            refused=self.stats.refused,
        )
        self.policy = PeerPolicy(
            config.allow_peers,
            allow_loopback=config.allow_loopback_peers,
            exclusive=config.peers_exclusive,
        )
        self.ports = PortPool(*config.relay_ports)
        #: Opens no socket before :meth:`start` (an Allocate gets 508 until then).
        self.relays = RelaySockets(config.relay_address, self.ports, self.stats)
        store = Credentials(
            config.realm, config.users, config.auth_secrets, max_ttl=config.rest_max_lifetime
        )
        self.handler = RequestHandler(
            table=self.table,
            authenticator=Authenticator(store),
            policy=self.policy,
            relays=self.relays,
            lifecycle=self,
            relay_family=family_of(config.relay_address),
            channel_max=LEGACY_CHANNEL_MAX if config.legacy_channels else CHANNEL_MAX,
            max_peers_per_request=config.max_peers_per_request,
            max_permissions=config.max_permissions,
            max_channels=config.max_channels,
        )
        self.udp_listeners: list[UdpListener] = []
        self.dtls_listeners: list[DtlsListener] = []
        #: The DTLS cookie secret (RFC 6347 §4.2.1), one per process, rotating.
        self.cookies = CookieJar()
        self.connections: set[TcpConnection] = set()
        #: TCP connections without an allocation, capped per source IP and in total.
        self.admission = TcpAdmission(config.tcp_max_pending, config.tcp_max_pending_per_ip)
        # TLS handshakes in progress, under the same limits (counted apart, so a connection
        # is never counted twice at the moment its handshake ends).
        self.handshakes = TcpAdmission(config.tcp_max_pending, config.tcp_max_pending_per_ip)
        #: Bound TURN listeners (port 0 resolved), in --listen order.
        self.listeners: list[Listen] = []
        self.health_address: HostPort | None = None
        self._tcp_servers: list[asyncio.Server | TlsListener] = []
        #: Open listeners by the Listen they were asked for: the socket's owner, bound address.
        self._open: dict[Listen, tuple[_Handle, Listen]] = {}
        #: The certificate of --tls-cert/--tls-key, loaded at start (None: not configured).
        self.tls: TlsContexts | None = None
        #: Every certificate pair a listener serves, each loaded, watched and rotated once
        #: however many listeners share it (the global pair is one of them).
        self.certificates: dict[TlsFiles, TlsContexts] = {}
        self._cert_watchers: dict[TlsFiles, asyncio.Task[None]] = {}
        #: Why a listener asked for is not open (its StartupError), by the Listen asked for.
        self.listener_errors: dict[Listen, str] = {}
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self._serving = False
        #: False until a configuration that comes later (live mode) is applied: not ready.
        self.configured = True
        self.pusher = make_pusher(config.reporting, self.stats, self.table)

    # -- lifecycle of the process

    @property
    def serving(self) -> bool:
        """Whether the listeners are up (and not yet stopped)."""
        return self._serving

    async def start(self) -> None:
        """Bind every listener and the health endpoint; raise :class:`StartupError` if one
        cannot be bound (nothing is left open then)."""
        loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        self.relays.start(loop)
        try:
            self._load_tls()
            for item in self.config.listen:
                self._open[item] = await self._open_listener(item)
                self.listeners.append(self._open[item][1])
            health_sock = _bind_tcp(self.config.health, "--health")
            host, port = health_sock.getsockname()[:2]
            self.health_address = HostPort(host, port)
            state = health.HealthState(
                self.stats,
                lambda: self._serving and self.configured,
                unready_on_drain=self.config.unready_on_drain,
            )
            self._runner = web.AppRunner(
                health.create_app(state), access_log=None, shutdown_timeout=2.0
            )
            await self._runner.setup()
            await web.SockSite(self._runner, health_sock).start()
        except BaseException:
            await self._close_listeners()
            await self._stop_certificate_watchers()
            raise
        self._update_own()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="relay-sweeper")
        if self.pusher is not None:
            await self.pusher.start()  # the first report goes out at once
        self._serving = True
        config = self.config
        log.info(
            "relay serving",
            listen=[str(item) for item in self.listeners],
            health=str(self.health_address),
            relay_address=config.relay_address,
            relay_ports=f"{config.relay_ports[0]}-{config.relay_ports[1]}",
            realm=config.realm,
            users=len(config.users),
            auth_secrets=len(config.auth_secrets),
            allow_peers=[str(rule) for rule in config.allow_peers],
            allow_loopback_peers=config.allow_loopback_peers,
            legacy_channels=config.legacy_channels,
            tls_certificate=None if self.tls is None else self.tls.current.info.subject,
            tls_not_after=None if self.tls is None else self.tls.current.info.status()["not_after"],
            max_lifetime=config.max_lifetime,
            user_quota=config.user_quota,
            total_quota=config.total_quota,
            event_loop=type(loop).__module__.split(".")[0],
            scalers=list(config.reporting.scalers),
            pod=config.reporting.pod,
            namespace=config.reporting.namespace,
            gateway=config.reporting.gateway,
        )

    async def _open_listener(self, item: Listen) -> tuple[_Handle, Listen]:
        loop = asyncio.get_running_loop()
        handle: _Handle
        if item.transport == "udp":
            try:
                sock = bind_listener(item.address.host, item.address.port)
            except OSError as exc:
                raise StartupError(f"--listen {item}: {exc.strerror or exc}") from None
            handle = UdpListener(sock, self.handler, self.stats, self.clock, self.wall)
            handle.start(loop)
            self.udp_listeners.append(handle)
            host, port = handle.local
        elif item.transport == "tls":
            contexts = self._contexts(item)
            tcp_sock = _bind_tcp(item.address, "--listen tls://")
            host, port = tcp_sock.getsockname()[:2]
            handle = TlsListener(
                tcp_sock,
                contexts,
                self._tls_connection,
                timeout=self.config.tls_handshake_timeout,
                on_failure=self._tls_handshake_failed,
                admission=self.handshakes,
            )
            handle.start(loop)
            self._tcp_servers.append(handle)
        elif item.transport == "dtls":
            handle = self._open_dtls(item)
            handle.start(loop)
            self.dtls_listeners.append(handle)
            host, port = handle.local
        else:
            tcp_sock = _bind_tcp(item.address, "--listen tcp://")
            handle = await loop.create_server(self._tcp_protocol, sock=tcp_sock)
            self._tcp_servers.append(handle)
            host, port = tcp_sock.getsockname()[:2]
        return handle, Listen(item.transport, HostPort(host, port), item.certificate)

    def _open_dtls(self, item: Listen) -> DtlsListener:
        """TURN over DTLS (RFC 8656 §3.1, RFC 7350) on ``item``, serving its own pair or the
        global one: never plain UDP when the pair is missing."""
        contexts = self._contexts(item)
        try:
            sock = bind_listener(item.address.host, item.address.port)
        except OSError as exc:
            raise StartupError(f"--listen {item}: {exc.strerror or exc}") from None
        self.stats.add_transport("dtls")
        return DtlsListener(
            sock,
            contexts,
            self.handler,
            self.stats,
            cookies=self.cookies,
            handshakes=self.handshakes,
            admission=self.admission,
            timeout=self.config.tls_handshake_timeout,
            on_failure=self._tls_handshake_failed,
            clock=self.clock,
            wall=self.wall,
            idle_timeout=self.tcp_idle_timeout,
        )

    def _load_tls(self) -> None:
        """Load --tls-cert/--tls-key (checked by the config already; they may have changed)."""
        files = self.config.tls
        if files is None or self.tls is not None:
            return
        self.tls = self._load_certificate(files, None)

    def _files(self, item: Listen) -> TlsFiles | None:
        """The pair ``item`` serves: its own, else the global one."""
        return item.certificate if item.certificate is not None else self.config.tls

    def _contexts(self, item: Listen) -> TlsContexts:
        files = self._files(item)
        if files is None:
            raise StartupError(f"--listen {item} needs --tls-cert and --tls-key")
        return self._load_certificate(files, f"--listen {item}")

    def _load_certificate(self, files: TlsFiles, what: str | None) -> TlsContexts:
        """The contexts of ``files``, loaded (and watched) on first use; ``what`` prefixes a
        refusal (the global pair's already names its flags)."""
        found = self.certificates.get(files)
        if found is not None:
            return found
        try:
            contexts = TlsContexts(files, poll_interval=self.tls_poll_interval, wall=self.wall)
        except CertError as exc:
            raise StartupError(str(exc) if what is None else f"{what}: {exc}") from None
        self.certificates[files] = contexts
        self._cert_watchers[files] = asyncio.create_task(
            contexts.watch(), name=f"relay-tls-watcher {files.cert}"
        )
        self.stats.add_transport("tls")
        self.stats.tls = self._tls_status
        return contexts

    async def _release_certificates(self) -> None:
        """Stop watching the pairs no open listener serves (the global one stays)."""
        used = {self._files(item) for item in self._open if item.transport in SECURE_TRANSPORTS}
        used.add(self.config.tls)
        for files in [f for f in self.certificates if f not in used]:
            del self.certificates[files]
            await runtime.cancel_and_wait(self._cert_watchers.pop(files, None))

    async def _stop_certificate_watchers(self) -> None:
        for files in list(self._cert_watchers):
            await runtime.cancel_and_wait(self._cert_watchers.pop(files))

    def check_certificates(self) -> None:
        """Look at every pair's files now (a caller that just rewrote them need not wait for
        the next poll)."""
        for contexts in list(self.certificates.values()):
            contexts.check()

    def _tls_status(self) -> dict[str, object]:
        status: dict[str, object] = {}
        for item, (handle, bound) in self._open.items():
            files = self._files(item) if item.transport in SECURE_TRANSPORTS else None
            contexts = self.certificates.get(files) if files is not None else None
            if contexts is None:
                continue
            certificate = contexts.status()
            if isinstance(handle, DtlsListener):
                certificate = {**certificate, **handle.status()}
            status[str(bound)] = certificate
        return status

    async def set_listeners(self, listen: Sequence[Listen]) -> None:
        """Open the listeners of ``listen`` not open yet and close those not in it; the others
        are untouched. A closed UDP listener takes its allocations with it (reason
        ``drained``); a closed TCP listener stops accepting, its connections go on. Raises
        :class:`StartupError` naming every listener that cannot be opened, once the rest is
        applied (:attr:`listener_errors` says which)."""
        wanted = list(dict.fromkeys(listen))
        errors: dict[Listen, str] = {}
        try:
            for item in [item for item in self._open if item not in wanted]:
                handle, bound = self._open.pop(item)
                if isinstance(handle, UdpListener):
                    for allocation in [a for a in self.table if a.link is handle]:
                        self.handler.delete(allocation, "drained")
                    handle.close()
                    self.udp_listeners.remove(handle)
                elif isinstance(handle, DtlsListener):
                    handle.close()  # its sessions' allocations end, reason drained
                    self.dtls_listeners.remove(handle)
                else:
                    handle.close()
                    self._tcp_servers.remove(handle)
                log.info("listener closed", listen=str(bound))
            for item in wanted:
                if item not in self._open:
                    try:
                        self._open[item] = await self._open_listener(item)
                    except StartupError as exc:
                        errors[item] = str(exc)
                        continue
                    log.info("listener opened", listen=str(self._open[item][1]))
        finally:
            self.listener_errors = errors
            self.listeners = [self._open[item][1] for item in wanted if item in self._open]
            self._update_own()
            await self._release_certificates()
        if errors:
            raise StartupError("; ".join(errors.values()))

    def _update_own(self) -> None:
        """Tell the handler this relay's own endpoints (bound listeners and health), which no
        client may name as a peer (RFC 8656 §17: no allocation nested through the relay)."""
        own = [(item.address.host, item.address.port) for item in self.listeners]
        if self.health_address is not None:
            own.append((self.health_address.host, self.health_address.port))
        self.handler.own = SelfEndpoints(own, self.config.relay_address)

    def begin_drain(self) -> None:
        """Refuse new allocations (and turn not ready with ``--drain-ready-status=not-ready``);
        existing ones keep working."""
        if self.stats.draining:
            return
        self.handler.draining = True
        self.stats.set_draining(True)
        log.info(
            "relay draining",
            allocations=len(self.table),
            drain_timeout=self.config.drain_timeout,
        )
        self._check_drained()

    async def wait_drained(self) -> None:
        """Return once draining and no allocation is left."""
        assert self._drained is not None, "start() first"
        await self._drained.wait()

    def close_allocations(self, reason: DeleteReason = "drained") -> int:
        """Delete every allocation for ``reason``; returns how many there were."""
        count = 0
        for allocation in self.table:
            if self.handler.delete(allocation, reason):
                count += 1
        return count

    async def stop(self) -> None:
        """Close listeners, delete what is left (reason ``drained``), stop health."""
        self._serving = False
        await runtime.cancel_and_wait(self._sweeper)
        self._sweeper = None
        await self._stop_certificate_watchers()
        closed = self.close_allocations("drained")
        self.relays.close()
        await self._close_listeners()
        if self.pusher is not None:
            await self.pusher.close()  # the last report: zero allocations
        log.info(
            "relay stopped",
            closed_allocations=closed,
            connections_total=dict(self.stats.connections),
            uptime=round(self.stats.uptime(self.clock()), 3),
        )

    async def _close_listeners(self) -> None:
        for server in self._tcp_servers:
            server.close()
        for connection in list(self.connections):
            connection.abort()
        for listener in self.udp_listeners:
            listener.close()
        self.udp_listeners.clear()
        for dtls in self.dtls_listeners:
            dtls.close()
        self.dtls_listeners.clear()
        self._open.clear()
        for server in self._tcp_servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._tcp_servers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- live configuration (routes, endpoints, credentials): no allocation is dropped

    def set_peer_policy(self, policy: PeerPolicy) -> None:
        """Use ``policy`` for new permissions, channels and sends from now on; peers it drops
        stay reachable for allocations holding a permission for them
        (:meth:`relay.core.handler.RequestHandler.set_policy`)."""
        self.policy = policy
        self.handler.set_policy(policy)

    def set_credentials(self, store: CredentialStore) -> None:
        """Authenticate requests against ``store`` (and its realm) from now on. Existing
        allocations stay; their next Refresh must pass the new credentials."""
        self.handler.auth.store = store

    # -- periodic work

    def sweep(self) -> None:
        """Expire what is due, close TCP connections and DTLS sessions idle without an
        allocation, and abort connections still not closed a grace period after their close
        (a client that does not read what is left)."""
        now = self.clock()
        self.handler.expire(now)
        self.relays.expire_reservations(now)
        timeout = self.tcp_idle_timeout
        for connection in list(self.connections):
            if connection.closing_since is not None:
                if connection.overdue(now, self.tcp_close_grace):
                    connection.abort()
                continue
            since = connection.idle_since
            if (since is not None and now - since > timeout) or connection.stalled(now):
                connection.close()
        for listener in self.dtls_listeners:
            listener.sweep(now)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                self.sweep()
            except Exception:  # keep expiring whatever one allocation did
                log.exception("expiry sweep failed")

    def _tcp_protocol(self) -> TcpConnection:
        return self._stream_client(TcpConnection)

    def _tls_connection(self) -> TlsConnection:
        # After its handshake a TLS client is a TCP client, under the same admission caps.
        return self._stream_client(TlsConnection)

    def _stream_client(self, kind: type[Stream]) -> Stream:
        return kind(
            self.handler,
            self.stats,
            self.connections,
            self.clock,
            self.wall,
            admission=self.admission,
        )

    def _tls_handshake_failed(self) -> None:
        self.stats.tls_handshake_failures += 1

    # -- relay.core.handler.Lifecycle

    def allocation_created(self, allocation: Allocation) -> None:
        allocation.link.attach(allocation)
        allocation.relay.attach(allocation)
        self.stats.allocation_created(allocation.id, allocation.transport, self.wall())

    def allocation_deleted(self, allocation: Allocation, reason: DeleteReason) -> None:
        allocation.link.detach(allocation)
        allocation.relay.close()
        duration = max(0.0, self.clock() - allocation.created)
        self.stats.allocation_deleted(
            allocation.id,
            allocation.transport,
            self.wall(),
            reason=reason,
            duration=duration,
            bytes_received=allocation.peer_rx,
            bytes_sent=allocation.peer_tx,
        )
        if _stdlib_log.isEnabledFor(logging.INFO):  # below it, skip building the event
            log.info(
                "allocation ended",
                allocation=allocation.id,
                transport=allocation.transport,
                client=_address(allocation.five_tuple.client),
                relayed=_address(allocation.relayed),
                user=allocation.username,
                reason=reason,
                duration=round(duration, 3),
                bytes_received=allocation.peer_rx,
                bytes_sent=allocation.peer_tx,
                permissions=len(allocation.permissions),
                channels=len(allocation.channels),
            )
        self._check_drained()

    def _check_drained(self) -> None:
        if self.stats.draining and not len(self.table) and self._drained is not None:
            self._drained.set()


async def serve(
    config: RelayConfig,
    server: RelayServer | None = None,
    started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain (see the module docstring) and stop;
    ``started`` runs once the server is up."""
    server = RelayServer(config) if server is None else server
    await server.start()
    if started is not None:
        try:
            await started()
        except BaseException:
            await server.stop()
            raise
    try:
        async with runtime.StopSignals() as signals:
            await signals.requested.wait()
            server.begin_drain()
            drained = asyncio.create_task(server.wait_drained())
            forced = asyncio.create_task(signals.forced.wait())
            done, _ = await asyncio.wait(
                {drained, forced},
                timeout=config.drain_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            await runtime.cancel_and_wait(drained)
            await runtime.cancel_and_wait(forced)
            outcome = (
                "drained" if drained in done else "second signal" if forced in done else "timeout"
            )
            log.info("drain finished", outcome=outcome, allocations_left=len(server.table))
    finally:
        await server.stop()
