"""``turnscale run``: the embedded default, wired together on loopback.

The only module that imports both halves, the relay and the scaler.

A scaler, one relay pushing reports to it, and a UDP echo peer (a stand-in media
server), with a demo credential, plus printed instructions to try them. Ctrl-C
stops all three: the relay closes its allocations and sends its last report
first, then the scaler stops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, cast

from relay.config import Listen, RelayConfig
from relay.net.server import RelayServer
from relay.reporting.config import ReportingConfig
from scaler.common import logs, runtime, sockets
from scaler.common.flags import FlagParser, HostPort, log_level, parse_host_port
from scaler.config import ScalerConfig
from scaler.scaling import ScalingPolicy
from scaler.server import ScalerServer

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"
DEMO_REALM = "turnscale.demo"

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
        "--log-level", type=log_level, default="warning", help="debug, info, warning or error"
    )
    return parser


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
        policy=ScalingPolicy(),
        stale_after=15.0,
        expire_after=60.0,
        token=None,
        max_relays=1000,
        log_level=args.log_level,
    )


def relay_config(args: Any, scaler_http: HostPort) -> RelayConfig:
    return RelayConfig(
        listen=(Listen("udp", args.turn), Listen("tcp", args.turn)),
        realm=DEMO_REALM,
        relay_address=args.turn.host,
        relay_ports=(49152, 65535),
        users=((DEMO_USER, DEMO_PASSWORD),),
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


def instructions(scaler: HostPort, turn: HostPort, health: HostPort, peer: HostPort) -> str:
    base = f"http://{scaler}"
    return f"""
turnscale is running on loopback:

  scaler  {base}/metrics   {base}/v1/scale   gRPC (KEDA) on the --grpc address
  relay   turn:{turn} (UDP and TCP), user {DEMO_USER}, password {DEMO_PASSWORD}
          health http://{health}/status
  peer    {peer} (UDP echo, a stand-in media server)

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
    scaler = ScalerServer(scaler_config(args))
    await scaler.start()
    peer_transport, _ = await loop.create_datagram_endpoint(
        EchoPeer, sock=sockets.bind_udp(args.peer.host, args.peer.port)
    )
    relay: RelayServer | None = None
    try:
        assert scaler.http_address is not None
        relay = RelayServer(relay_config(args, scaler.http_address))
        await relay.start()
        turn = relay.listeners[0].address
        peer = HostPort(*peer_transport.get_extra_info("sockname")[:2])
        assert relay.health_address is not None
        print(instructions(scaler.http_address, turn, relay.health_address, peer), flush=True)
        addresses = {
            "http": str(scaler.http_address),
            "grpc": str(scaler.grpc_address),
            "turn": str(turn),
            "health": str(relay.health_address),
            "peer": str(peer),
        }
        # One machine-readable line for scripts (and the tests).
        print(json.dumps({"event": "turnscale running", **addresses}), flush=True)
        await runtime.stop_requested()
    finally:
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
        lambda args: build_parser().parse_flags(args),
        run,
        startup_errors=(StartupError,),
    )
