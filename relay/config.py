"""``turnscale relay`` configuration: one frozen object, parsed and validated at start-up.

Every flag also reads ``TURNSCALE_<FLAG>`` (repeatable flags take a comma-separated list
there). A bad value is a :class:`scaler.common.flags.ConfigError` naming the flag; passwords and
secrets never appear in an error, a log line or a ``repr``.

These are the relay's own flags (and the reporting ones). Another source of configuration,
the Gateway API objects, adds its flags to the same parser and hands :func:`from_args` an
:class:`Overrides` in place of the flags it replaces; :mod:`relay.settings` composes the two,
so nothing here depends on :mod:`relay.gateway`.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from relay.core.admission import DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_IP
from relay.core.certs import CertError, TlsFiles, load_pair
from relay.core.credentials import check_realm, parse_user, read_secret_file, read_user_file
from relay.core.handler import MAX_CHANNELS, MAX_PEERS_PER_REQUEST, MAX_PERMISSIONS
from relay.core.peer_policy import PeerRule, parse_peer_rule
from relay.core.ports import DEFAULT_RANGE, parse_port_range
from relay.proto.turn import MAX_LIFETIME
from relay.reporting import config as reporting
from relay.reporting.config import ReportingConfig
from scaler.common import sockets
from scaler.common.flags import (
    ConfigError,
    FlagParser,
    HostPort,
    log_level,
    non_negative_int,
    parse_duration,
    parse_host_port,
)

__all__ = [
    "DEFAULT_LISTEN",
    "SECURE_TRANSPORTS",
    "Listen",
    "Overrides",
    "RelayConfig",
    "build_parser",
    "default_relay_address",
    "from_args",
    "parse_listen",
]

Transport = Literal["udp", "tcp", "tls", "dtls"]
#: Transports served with a certificate (--tls-cert/--tls-key, or a listener's own).
SECURE_TRANSPORTS: Final = ("tls", "dtls")


@dataclass(frozen=True, slots=True)
class Listen:
    """A TURN listener: transport and address; a ``tls``/``dtls`` one may bring its own
    certificate (a Gateway listener's ``tls.certificateRefs``), else it serves
    ``--tls-cert``/``--tls-key``."""

    transport: Transport
    address: HostPort
    certificate: TlsFiles | None = None

    def __str__(self) -> str:
        return f"{self.transport}://{self.address}"


DEFAULT_LISTEN: Final = ("udp://0.0.0.0:3478", "tcp://0.0.0.0:3478")
EVENT_LOOPS: Final = ("uvloop", "asyncio")
DRAIN_READY_STATUSES: Final = ("ready", "not-ready")
#: ``--rest-max-lifetime``: a day, the TURN REST API draft's example and STUNner's default.
DEFAULT_REST_MAX_LIFETIME: Final = 86400


def parse_listen(text: str) -> Listen:
    """``udp://HOST:PORT``, ``tcp://HOST:PORT``, ``tls://HOST:PORT`` (TURN over TLS over
    TCP, RFC 8656 §3.1) or ``dtls://HOST:PORT`` (TURN over DTLS 1.2 over UDP, RFC 8656 §3.1,
    RFC 7350); HOST is an IP literal (``[V6]`` in brackets)."""
    match = re.fullmatch(r"(udp|tcp|tls|dtls)://(.+)", text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or dtls://HOST:PORT"
        )
    address = parse_host_port(match.group(2))
    try:
        ipaddress.ip_address(address.host)
    except ValueError:
        raise ValueError(f"{text!r}: the host must be an IP address, not a name") from None
    transports: dict[str, Transport] = {"udp": "udp", "tcp": "tcp", "tls": "tls", "dtls": "dtls"}
    return Listen(transports[match.group(1)], address)


def _ip_literal(text: str) -> str:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"{ip} cannot be a relay address (use the address clients reach)")
    return str(ip)


def _duration_seconds(text: str) -> int:
    seconds = parse_duration(text)
    if seconds < 1:
        raise ValueError(f"{text!r} is shorter than 1s")
    return int(seconds)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything ``turnscale relay`` runs with. Credentials are left out of ``repr``."""

    listen: tuple[Listen, ...]
    realm: str
    relay_address: str
    relay_ports: tuple[int, int] = DEFAULT_RANGE
    users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    auth_secrets: tuple[str, ...] = field(default=(), repr=False)
    allow_peers: tuple[PeerRule, ...] = ()
    allow_loopback_peers: bool = False
    #: Only ``allow_peers`` are reachable, even when there are none (Gateway API routes).
    peers_exclusive: bool = False
    max_lifetime: int = MAX_LIFETIME
    #: Longest a TURN REST API username may still be valid for (its expiry - now), seconds.
    rest_max_lifetime: float = DEFAULT_REST_MAX_LIFETIME
    user_quota: int = 0
    total_quota: int = 0
    #: Caps per request / allocation (0 = none): RFC 8656 §10.2, §12.2.
    max_peers_per_request: int = MAX_PEERS_PER_REQUEST
    max_permissions: int = MAX_PERMISSIONS
    max_channels: int = MAX_CHANNELS
    drain_timeout: float = 300.0
    #: TCP connections without an allocation, in total and per source IP (0 = no limit).
    tcp_max_pending: int = DEFAULT_MAX_PENDING
    tcp_max_pending_per_ip: int = DEFAULT_MAX_PENDING_PER_IP
    #: ``/ready`` is 503 while draining (``--drain-ready-status=not-ready``).
    unready_on_drain: bool = False
    health: HostPort = field(default_factory=lambda: HostPort("0.0.0.0", 8086))
    log_level: str = "info"
    event_loop: str = "uvloop"
    legacy_channels: bool = False
    #: ``--tls-cert`` and ``--tls-key``: what ``tls://`` and ``dtls://`` listeners serve
    #: (None: no TLS).
    tls: TlsFiles | None = None
    #: A TLS handshake not done after this many seconds closes the connection.
    tls_handshake_timeout: float = 5.0
    reporting: ReportingConfig = field(default_factory=ReportingConfig)

    @property
    def user_names(self) -> tuple[str, ...]:
        """The static user names (no passwords)."""
        return tuple(name for name, _ in self.users)


def build_parser(prog: str = "turnscale relay") -> FlagParser:
    parser = FlagParser(
        prog=prog,
        description="A TURN/STUN relay (RFC 8489, RFC 8656) over UDP, TCP and TLS with long-term "
        "credentials, a peer policy, quotas, health endpoints and graceful drain.",
    )
    parser.add_flag(
        "--listen",
        action="append",
        type=parse_listen,
        default=None,
        metavar="udp://HOST:PORT|tcp://HOST:PORT|tls://HOST:PORT|dtls://HOST:PORT",
        help="TURN listener, repeatable (default: udp://0.0.0.0:3478 and tcp://0.0.0.0:3478); "
        "tls:// (TLS over TCP) and dtls:// (DTLS 1.2 over UDP) need --tls-cert and --tls-key",
    )
    parser.add_flag(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="PEM certificate chain (leaf first) of the tls:// and dtls:// listeners; reloaded "
        "when it changes (new handshakes get the new one)",
    )
    parser.add_flag(
        "--tls-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="PEM private key of --tls-cert; reloaded when it changes",
    )
    parser.add_flag(
        "--tls-handshake-timeout",
        type=parse_duration,
        default="5s",
        help="a TLS or DTLS handshake not done after this long closes the connection (DTLS: "
        "drops the session)",
    )
    parser.add_flag(
        "--realm", default=None, help="the long-term credential realm (default: turnscale)"
    )
    parser.add_flag(
        "--user",
        action="append",
        default=None,
        metavar="NAME:PASSWORD",
        help="a static user, repeatable",
    )
    parser.add_flag(
        "--user-file",
        type=Path,
        default=None,
        help="file of static users, one NAME:PASSWORD per line (# comments)",
    )
    parser.add_flag(
        "--auth-secret",
        action="append",
        default=None,
        metavar="SECRET",
        help="TURN REST API shared secret, repeatable for rotation (the first signs new ones)",
    )
    parser.add_flag(
        "--auth-secret-file",
        type=Path,
        default=None,
        help="file of TURN REST API secrets, one per line (# comments)",
    )
    parser.add_flag(
        "--allow-peer",
        action="append",
        type=parse_peer_rule,
        default=None,
        metavar="CIDR[:PORT[-PORT]]",
        help="peers clients may reach, repeatable (default: any peer outside the deny set)",
    )
    parser.add_flag(
        "--allow-loopback-peers",
        action="store_true",
        default=False,
        help="let clients reach 127.0.0.0/8 and ::1 (local testing only)",
    )
    parser.add_flag(
        "--legacy-channels",
        action="store_true",
        default=False,
        help="also accept channel numbers 0x5000-0x7FFF (RFC 5766; RFC 8656 reserves them), "
        "as coturn's turnutils_uclient picks them",
    )
    parser.add_flag(
        "--relay-ports",
        type=parse_port_range,
        default="49152-65535",
        metavar="MIN-MAX",
        help="ports of relayed sockets; exhausted -> 508",
    )
    parser.add_flag(
        "--relay-address",
        type=_ip_literal,
        default=None,
        help="IP advertised in XOR-RELAYED-ADDRESS and bound by relayed sockets (default: the "
        "first non-wildcard --listen host, else the host's primary IPv4 address)",
    )
    parser.add_flag(
        "--max-lifetime",
        type=_duration_seconds,
        default="3600s",
        help="longest allocation lifetime granted (the default 600s is capped to it)",
    )
    parser.add_flag(
        "--rest-max-lifetime",
        type=_duration_seconds,
        default=f"{DEFAULT_REST_MAX_LIFETIME}s",
        help="a TURN REST API username that expires further out than this is refused (401); "
        "in Gateway API mode the GatewayConfig's authLifetime",
    )
    parser.add_flag(
        "--user-quota",
        type=non_negative_int,
        default=0,
        help="allocations per user (REST API: per user id), 0 = unlimited; over it -> 486",
    )
    parser.add_flag(
        "--total-quota",
        type=non_negative_int,
        default=0,
        help="allocations on this relay, 0 = unlimited; over it -> 486",
    )
    parser.add_flag(
        "--max-peers-per-request",
        type=non_negative_int,
        default=MAX_PEERS_PER_REQUEST,
        help="XOR-PEER-ADDRESS attributes one CreatePermission may carry, 0 = unlimited; "
        "over it -> 400",
    )
    parser.add_flag(
        "--max-permissions",
        type=non_negative_int,
        default=MAX_PERMISSIONS,
        help="permissions (peer IPs) one allocation may hold, 0 = unlimited; over it -> 508",
    )
    parser.add_flag(
        "--max-channels",
        type=non_negative_int,
        default=MAX_CHANNELS,
        help="channels one allocation may hold, 0 = unlimited; over it -> 508",
    )
    parser.add_flag(
        "--tcp-max-pending",
        type=non_negative_int,
        default=DEFAULT_MAX_PENDING,
        help="TCP connections without an allocation the relay holds, 0 = unlimited; over it "
        "a new connection is closed at once",
    )
    parser.add_flag(
        "--tcp-max-pending-per-ip",
        type=non_negative_int,
        default=DEFAULT_MAX_PENDING_PER_IP,
        help="TCP connections without an allocation one source IP may hold, 0 = unlimited",
    )
    parser.add_flag(
        "--drain-timeout",
        type=parse_duration,
        default="300s",
        help="after SIGTERM, how long existing allocations may keep going",
    )
    parser.add_flag(
        "--drain-ready-status",
        choices=DRAIN_READY_STATUSES,
        default="ready",
        help="what /ready answers while draining: ready (200, default: kube-proxy keeps the "
        "UDP conntrack entries of the calls) or not-ready (503)",
    )
    parser.add_flag(
        "--health",
        type=parse_host_port,
        default="0.0.0.0:8086",
        help="health HTTP address: /live, /ready, /status",
    )
    parser.add_flag(
        "--log-level", type=log_level, default="info", help="debug, info, warning or error"
    )
    parser.add_flag(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="uvloop",
        help="asyncio event loop implementation",
    )
    reporting.add_flags(parser)
    return parser


@dataclass(frozen=True, slots=True)
class Overrides:
    """What another configuration source (the Gateway API objects) says in place of
    ``--listen``, ``--realm``, ``--user*``, ``--auth-secret*`` and ``--allow-peer``. With it
    only ``allow_peers`` are reachable (:attr:`RelayConfig.peers_exclusive`)."""

    listen: tuple[Listen, ...]
    realm: str
    users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    auth_secrets: tuple[str, ...] = field(default=(), repr=False)
    allow_peers: tuple[PeerRule, ...] = ()
    #: Where the listeners bind: the default relay address is derived from it.
    listener_host: str = "0.0.0.0"
    #: The fleet name reported (replaces ``--gateway``), when the source knows it.
    gateway: str | None = None
    #: The REST credentials' lifetime (replaces ``--rest-max-lifetime``), when it is known.
    rest_max_lifetime: int | None = None


def default_relay_address(listen: Sequence[Listen]) -> str:
    """The first listener host that is not a wildcard; else the address the host would use to
    reach the internet (a UDP ``connect`` picks a route and sends nothing); else 127.0.0.1."""
    for item in listen:
        if not ipaddress.ip_address(item.address.host).is_unspecified:
            return item.address.host
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only routing, no packet
            host: str = probe.getsockname()[0]
            if not ipaddress.ip_address(host).is_unspecified:
                return host
    except OSError:
        pass
    return "127.0.0.1"


def _check_bindable(address: str) -> None:
    try:
        sockets.bind_udp(address, 0).close()
    except OSError as exc:
        raise ConfigError(
            f"--relay-address {address}: relayed sockets cannot bind it ({exc.strerror})"
        ) from None


def from_args(
    args: argparse.Namespace,
    *,
    report_to: ReportingConfig | None = None,
    overrides: Overrides | None = None,
) -> RelayConfig:
    """The config of parsed flags (``report_to``: their reporting part, when the caller has
    read it already); ``overrides`` replaces the listener, credential and peer flags."""
    report_to = reporting.from_args(args) if report_to is None else report_to
    relay_address = args.relay_address
    rest_max_lifetime = args.rest_max_lifetime
    if overrides is not None:
        if overrides.rest_max_lifetime is not None:
            rest_max_lifetime = overrides.rest_max_lifetime
        listen, realm = overrides.listen, overrides.realm
        users, secrets = overrides.users, overrides.auth_secrets
        allow_peers = overrides.allow_peers
        if overrides.gateway is not None:
            report_to = dataclasses.replace(report_to, gateway=overrides.gateway)
        host = HostPort(overrides.listener_host, 0)
        relay_address = relay_address or default_relay_address([Listen("udp", host)])
    else:
        listen, realm, flag_users, flag_secrets = _flag_credentials(args)
        users, secrets = tuple(flag_users), tuple(flag_secrets)
        allow_peers = tuple(args.allow_peer)
    relay_address = relay_address or default_relay_address(listen)
    _check_bindable(relay_address)
    if args.drain_timeout < 0:
        raise ConfigError("--drain-timeout must not be negative")
    tls = _tls_files(args, listen)
    if args.tls_handshake_timeout <= 0:
        raise ConfigError("--tls-handshake-timeout must be positive")
    return RelayConfig(
        listen=listen,
        realm=realm,
        relay_address=relay_address,
        relay_ports=args.relay_ports,
        users=tuple(users),
        auth_secrets=tuple(secrets),
        allow_peers=allow_peers,
        allow_loopback_peers=args.allow_loopback_peers,
        peers_exclusive=overrides is not None,
        max_lifetime=args.max_lifetime,
        rest_max_lifetime=rest_max_lifetime,
        user_quota=args.user_quota,
        total_quota=args.total_quota,
        max_peers_per_request=args.max_peers_per_request,
        max_permissions=args.max_permissions,
        max_channels=args.max_channels,
        drain_timeout=args.drain_timeout,
        tcp_max_pending=args.tcp_max_pending,
        tcp_max_pending_per_ip=args.tcp_max_pending_per_ip,
        unready_on_drain=args.drain_ready_status == "not-ready",
        health=args.health,
        log_level=args.log_level,
        event_loop=args.event_loop,
        legacy_channels=args.legacy_channels,
        tls=tls,
        tls_handshake_timeout=args.tls_handshake_timeout,
        reporting=report_to,
    )


def _tls_files(args: argparse.Namespace, listen: Sequence[Listen]) -> TlsFiles | None:
    """``--tls-cert`` and ``--tls-key``, both or neither, checked now (readable, matching,
    valid today): a tls:// or dtls:// listener never starts without them."""
    cert, key = args.tls_cert, args.tls_key
    wanted = [
        str(item)
        for item in listen
        if item.transport in SECURE_TRANSPORTS and item.certificate is None
    ]
    if cert is None and key is None:
        if wanted:
            raise ConfigError(f"--listen {wanted[0]} needs --tls-cert and --tls-key")
        return None
    if cert is None:
        raise ConfigError("--tls-cert is missing (--tls-key is given)")
    if key is None:
        raise ConfigError("--tls-key is missing (--tls-cert is given)")
    files = TlsFiles(cert, key)
    try:
        load_pair(files, time.time())
    except CertError as exc:
        raise ConfigError(str(exc)) from None
    return files


def _flag_credentials(
    args: argparse.Namespace,
) -> tuple[tuple[Listen, ...], str, list[tuple[str, str]], list[str]]:
    """``--listen``, ``--realm``, ``--user*`` and ``--auth-secret*``, checked."""
    listen = tuple(args.listen) or tuple(parse_listen(text) for text in DEFAULT_LISTEN)
    seen: set[tuple[str, str, int]] = set()
    for item in listen:
        key = (item.transport, item.address.host, item.address.port)
        if key in seen and item.address.port != 0:
            raise ConfigError(f"--listen {item} is given twice")
        seen.add(key)
    realm = (args.realm if args.realm is not None else "turnscale").strip()
    if not realm:
        raise ConfigError("--realm must not be empty")
    problem = check_realm(realm)
    if problem is not None:
        raise ConfigError(f"--realm is too long: {problem}")
    users: list[tuple[str, str]] = []
    try:
        for number, text in enumerate(args.user, 1):
            users.append(parse_user(text, f"--user #{number}"))
        if args.user_file is not None:
            users.extend(read_user_file(args.user_file))
        secrets = [text for text in args.auth_secret]
        if any(not s.strip() or s != s.strip() for s in secrets):
            raise ValueError("--auth-secret: a secret is empty or has surrounding white space")
        if args.auth_secret_file is not None:
            secrets.extend(read_secret_file(args.auth_secret_file))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    names = [name for name, _ in users]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"--user / --user-file: user {duplicates[0]!r} is given twice")
    if not users and not secrets:
        raise ConfigError(
            "no credentials: give --user NAME:PASSWORD, --user-file, --auth-secret or "
            "--auth-secret-file (a relay without authentication is an open relay), or the "
            "Gateway API objects with --config"
        )
    return listen, realm, users, secrets
