"""``turnscale run``: the embedded default, wired together on loopback.

The only module that imports both halves, the relay and the scaler.

A scaler, one relay pushing reports to it, a UDP echo peer (a stand-in media
server) and the ICE credential endpoint with its tester page (``turnscale auth``'s
application, minting TURN REST credentials with a secret made at start), with a demo
credential, plus printed instructions to try them. ``--tls-cert``/``--tls-key`` add a
``tls://`` listener, answered by ``/ice`` as a ``turns:`` URL. Ctrl-C stops everything:
the relay closes its allocations and sends its last report first, then the scaler stops.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from relay.config import Listen, RelayConfig
from relay.core.certs import TlsFiles
from relay.gateway.ice_server import IceState, create_app, ice_tester_url
from relay.gateway.translate import EphemeralAuth, GatewaySettings, ListenerSettings
from relay.net.server import RelayServer
from relay.reporting.config import ReportingConfig
from scaler.common import logs, runtime, sockets
from scaler.common.flags import (
    ConfigError,
    FlagParser,
    HostPort,
    log_level,
    parse_host_port,
    positive_int,
)
from scaler.config import ScalerConfig
from scaler.scaling import ScalingPolicy
from scaler.server import ScalerServer

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"
DEMO_REALM = "turnscale.demo"
#: Lifetime of the credentials /ice mints here (seconds): a tester tab lasts less.
ICE_LIFETIME = 3600

log = logs.get("turnscale.run")


def build_parser() -> FlagParser:
    parser = FlagParser(
        prog="turnscale run",
        description="The embedded default: a scaler, a relay and an echo peer on loopback.",
    )
    parser.add_flag(
        "--http", type=parse_host_port, default="127.0.0.1:8080", help="the scaler's HTTP address"
    )
    parser.add_flag(
        "--grpc", type=parse_host_port, default="127.0.0.1:9090", help="the scaler's gRPC address"
    )
    parser.add_flag(
        "--turn",
        type=parse_host_port,
        default="127.0.0.1:3478",
        help="the relay's TURN address (UDP and TCP)",
    )
    parser.add_flag(
        "--health",
        type=parse_host_port,
        default="127.0.0.1:8086",
        help="the relay's health address",
    )
    parser.add_flag(
        "--peer",
        type=parse_host_port,
        default="127.0.0.1:3479",
        help="the UDP echo peer (a stand-in media server)",
    )
    parser.add_flag(
        "--target-per-replica",
        type=positive_int,
        default=100,
        help="allocations one relay should carry (a small value shows scaling with a few "
        "tester tabs)",
    )
    parser.add_flag(
        "--auth",
        type=parse_host_port,
        default="127.0.0.1:8087",
        help="the ICE credential endpoint (/ice) and its tester page (/)",
    )
    parser.add_flag(
        "--turns",
        type=parse_host_port,
        default="127.0.0.1:5349",
        help="the relay's TURN over TLS address, with --tls-cert and --tls-key",
    )
    parser.add_flag(
        "--tls-cert", type=Path, default=None, help="PEM certificate chain: adds a tls:// listener"
    )
    parser.add_flag("--tls-key", type=Path, default=None, help="the PEM key of --tls-cert")
    parser.add_flag(
        "--log-level", type=log_level, default="warning", help="debug, info, warning or error"
    )
    return parser


def parse(argv: Sequence[str]) -> Any:
    """The flags; ``--auth`` on loopback, ``--tls-cert`` and ``--tls-key`` together."""
    args = build_parser().parse_flags(argv)
    if not sockets.is_loopback(args.auth.host):
        # /ice mints for anyone here (no caller tokens): as turnscale auth, loopback only.
        raise ConfigError(f"--auth {args.auth}: the ICE endpoint needs a loopback address")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    return args


class EchoPeer(asyncio.DatagramProtocol):
    """Sends every datagram back where it came from (through the relay)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


def scaler_config(args: Any) -> ScalerConfig:
    return ScalerConfig(
        http=args.http,
        grpc=args.grpc,
        policy=ScalingPolicy(target_per_replica=args.target_per_replica),
        stale_after=15.0,
        expire_after=60.0,
        token=None,
        max_relays=1000,
        log_level=args.log_level,
    )


def relay_config(args: Any, scaler_http: HostPort, rest_secret: str) -> RelayConfig:
    tls = None if args.tls_cert is None else TlsFiles(args.tls_cert, args.tls_key)
    return RelayConfig(
        listen=(Listen("udp", args.turn), Listen("tcp", args.turn))
        + (() if tls is None else (Listen("tls", args.turns),)),
        realm=DEMO_REALM,
        relay_address=args.turn.host,
        relay_ports=(49152, 65535),
        users=((DEMO_USER, DEMO_PASSWORD),),
        # What /ice mints from: the tester page's (and any WebRTC app's) credentials.
        auth_secrets=(rest_secret,),
        tls=tls,
        allow_loopback_peers=True,  # the echo peer is on loopback: demo only
        legacy_channels=True,  # so coturn's turnutils_uclient works as printed
        health=args.health,
        log_level=args.log_level,
        reporting=ReportingConfig(
            scalers=(f"http://{scaler_http}",),
            pod="demo-relay",
            namespace="stunner",
            gateway="stunner-gateway",
        ),
    )


def ice_state(relay: RelayServer, rest_secret: str) -> IceState:
    """What /ice mints from: the relay's UDP and TCP listeners, its REST secret."""
    listeners = tuple(
        ListenerSettings(f"{item.transport}-listener", item.transport, item.address.port)
        for item in relay.listeners
        if item.transport in ("udp", "tcp")
    )
    settings = GatewaySettings(
        namespace="stunner",
        name="stunner-gateway",
        generation=1,
        config=("stunner", "turnscale-run"),
        listeners=listeners,
        realm=DEMO_REALM,
        auth=EphemeralAuth(rest_secret, lifetime=ICE_LIFETIME),
        static_peers=(),
        services=(),
    )
    turns = tuple(
        f"turns:{item.address}?transport=tcp" for item in relay.listeners if item.transport == "tls"
    )
    return IceState(settings, (relay.listeners[0].address.host,), extra_urls=turns)


def instructions(
    scaler: HostPort, turn: HostPort, health: HostPort, peer: HostPort, tester: str
) -> str:
    base = f"http://{scaler}"
    return f"""
turnscale is running on loopback:

  scaler  {base}/metrics   {base}/v1/scale   gRPC (KEDA) on the --grpc address
  relay   turn:{turn} (UDP and TCP), user {DEMO_USER}, password {DEMO_PASSWORD}
          health http://{health}/status
  peer    {peer} (UDP echo, a stand-in media server)
  ICE     {tester}  the ICE tester: a relay-only WebRTC call in your browser
          (credentials from {tester}ice; each open tab holds 2 allocations per TURN URL)

Open 450 allocations for a minute and watch the scale follow (2 -> 5 -> 2):

  turnscale load --relay udp://{turn} --user {DEMO_USER}:{DEMO_PASSWORD} \\
      --allocations 450 --ramp 10s --duration 60s --peer {peer} --pps 20
  watch -n 0.5 curl -s '{base}/v1/scale?gateway=stunner-gateway'
  curl -s {base}/metrics | grep ^stunner_

Or with coturn's client (Debian package coturn; -c: no RTCP allocation, the peer echoes
on one port only):

  turnutils_uclient -c -p {turn.port} -u {DEMO_USER} -w {DEMO_PASSWORD} \\
      -e {peer.host} -r {peer.port} -m 10 -n 500 -l 160 -z 20 {turn.host}

Ctrl-C stops everything.
"""


async def run(args: Any) -> None:
    loop = asyncio.get_running_loop()
    rest_secret = secrets.token_urlsafe(32)  # this run's only: never printed
    scaler = ScalerServer(scaler_config(args))
    await scaler.start()
    peer_transport, _ = await loop.create_datagram_endpoint(
        EchoPeer, sock=sockets.bind_udp(args.peer.host, args.peer.port)
    )
    relay: RelayServer | None = None
    auth: web.AppRunner | None = None
    try:
        assert scaler.http_address is not None
        relay = RelayServer(relay_config(args, scaler.http_address, rest_secret))
        await relay.start()
        # Loopback only, so /ice needs no caller token (as turnscale auth on 127.0.0.1).
        auth = web.AppRunner(create_app(ice_state(relay, rest_secret)), access_log=None)
        await auth.setup()
        auth_sock = sockets.bind_tcp(args.auth.host, args.auth.port)
        await web.SockSite(auth, auth_sock).start()
        auth_address = HostPort(args.auth.host, auth_sock.getsockname()[1])
        tester = ice_tester_url(auth_address, token_needed=False)
        turn = relay.listeners[0].address
        peer = HostPort(*peer_transport.get_extra_info("sockname")[:2])
        assert relay.health_address is not None
        print(
            instructions(scaler.http_address, turn, relay.health_address, peer, tester),
            flush=True,
        )
        streams: dict[str, str] = {x.transport: str(x.address) for x in relay.listeners[1:]}
        addresses: dict[str, str] = {
            "http": str(scaler.http_address),
            "grpc": str(scaler.grpc_address),
            "turn": str(turn),
            **streams,  # "tcp", and "tls" with --tls-cert
            "health": str(relay.health_address),
            "peer": str(peer),
            "auth": str(auth_address),
            "tester": tester,
        }
        # One machine-readable line for scripts (and the tests).
        print(json.dumps({"event": "turnscale running", **addresses}), flush=True)
        await runtime.stop_requested()
    finally:
        if auth is not None:
            await auth.cleanup()
        if relay is not None:
            await relay.stop()  # closes allocations, sends the last report
        peer_transport.close()
        await scaler.stop()


def main(argv: Sequence[str]) -> None:
    """``turnscale run``."""
    from relay.net.server import StartupError

    runtime.run_command(
        "turnscale run",
        argv,
        parse,
        run,
        startup_errors=(StartupError,),
    )
