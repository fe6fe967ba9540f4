"""``turnscale run``: the embedded default, a scaler on loopback and how to try it."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Sequence

from scaler import cli, logs
from scaler.config import ScalerConfig
from scaler.flags import ConfigError, FlagParser, HostPort, fail, log_level, parse_host_port
from scaler.scaling import ScalingPolicy
from scaler.server import ScalerServer


def build_parser() -> FlagParser:
    parser = FlagParser(
        prog="turnscale run",
        description="The embedded default: a scaler on loopback, wired up, with what to try next.",
    )
    parser.add_flag(
        "--http", type=parse_host_port, default="127.0.0.1:8080", help="the scaler's HTTP address"
    )
    parser.add_flag(
        "--grpc", type=parse_host_port, default="127.0.0.1:9090", help="the scaler's gRPC address"
    )
    parser.add_flag(
        "--log-level", type=log_level, default="info", help="debug, info, warning or error"
    )
    return parser


def sample_report(now: float) -> str:
    """A report of one relay with 250 allocations, as a relay would push it."""
    return json.dumps(
        {
            "version": 1,
            "relay": {
                "pod": "demo-relay",
                "namespace": "stunner",
                "gateway": "stunner-gateway",
                "instance": "demo",
                "started_at": round(now, 2),
            },
            "seq": 1,
            "sent_at": round(now, 2),
            "state": {
                "allocations": {"udp": 250, "tcp": 0},
                "connections_total": {"udp": 250, "tcp": 0},
                "bytes_received_total": {"client": 0, "peer": 0},
                "bytes_sent_total": {"client": 0, "peer": 0},
            },
            "events": [],
        },
        separators=(",", ":"),
    )


def instructions(http: HostPort) -> str:
    base = f"http://{http}"
    return f"""
turnscale is running on loopback.

  scaler   {base}   (metrics {base}/metrics, scaling {base}/v1/scale)

Push a report as a relay would (one relay, 250 allocations), then ask for the scale:

  curl -sS -H 'Content-Type: application/json' --data '{sample_report(time.time())}' \\
       {base}/v1/reports
  curl -sS '{base}/v1/scale?gateway=stunner-gateway'     # desiredReplicas: 3
  curl -sS {base}/metrics | grep ^stunner_

The demo relay leaves the totals 60 s after its last report. Ctrl-C stops everything.
"""


async def run(config: ScalerConfig) -> None:
    server = ScalerServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    assert server.http_address is not None
    print(instructions(server.http_address), flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str]) -> None:
    try:
        args = build_parser().parse_flags(argv)
    except ConfigError as error:
        fail("turnscale run", error)
    config = ScalerConfig(
        http=args.http,
        grpc=args.grpc,
        policy=ScalingPolicy(),
        stale_after=15.0,
        expire_after=60.0,
        token=None,
        max_relays=1000,
        log_level=args.log_level,
    )
    logs.configure(config.log_level)
    cli.run_async(lambda: run(config))
