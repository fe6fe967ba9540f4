"""``turnscale load``: open real TURN allocations against a relay fleet, for a while.

Each allocation is aioice's TURN client (RFC 8656 Allocate, refreshed by the
client itself). Allocations open evenly over ``--ramp``, stay up, optionally
send media-like traffic to a peer (``--pps`` packets of ``--size`` bytes per
allocation, each echoed back by the peer through the relay), and close (Refresh
with lifetime 0) when ``--duration`` ends or on Ctrl-C. Progress goes to stderr
once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aioice.turn import TurnTransport, create_turn_endpoint

from relay.core.auth import rest_credentials
from scaler.common import runtime
from scaler.common.flags import (
    ConfigError,
    FlagParser,
    HostPort,
    log_level,
    non_negative_int,
    parse_duration,
    parse_host_port,
    positive_int,
)

# Allocate requests in flight at once while ramping (a relay sees a burst, not a flood).
MAX_OPENING = 64
TICK = 0.02


@dataclass(frozen=True, slots=True)
class LoadConfig:
    relay: HostPort
    transport: str
    username: str
    password: str
    allocations: int
    ramp: float
    duration: float
    peer: HostPort | None
    pps: int
    size: int
    log_level: str


def parse_relay(text: str) -> tuple[str, HostPort]:
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "udp", text
    if scheme not in ("udp", "tcp"):
        raise ValueError(f"{text!r}: the transport must be udp:// or tcp://")
    return scheme, parse_host_port(rest)


def build_parser() -> FlagParser:
    parser = FlagParser(
        prog="turnscale load",
        description="Open real TURN allocations against a relay and keep them up for a while.",
    )
    parser.add_flag(
        "--relay",
        type=parse_relay,
        default="udp://127.0.0.1:3478",
        help="the relay (or its load balancer): udp://HOST:PORT or tcp://HOST:PORT",
    )
    parser.add_flag("--user", default=None, help="static credential NAME:PASSWORD")
    parser.add_flag(
        "--auth-secret",
        default=None,
        help="shared secret: mint TURN REST API credentials instead of --user",
    )
    parser.add_flag("--allocations", type=positive_int, default=100, help="allocations to open")
    parser.add_flag(
        "--ramp",
        type=parse_duration,
        default="10s",
        help="open the allocations evenly over this long",
    )
    parser.add_flag(
        "--duration",
        type=parse_duration,
        default="60s",
        help="stop (and close every allocation) after this long, ramp included",
    )
    parser.add_flag(
        "--peer",
        type=parse_host_port,
        default=None,
        help="send traffic to this peer (an echo server: replies count as received)",
    )
    parser.add_flag(
        "--pps",
        type=non_negative_int,
        default=0,
        help="packets per second per allocation (needs --peer)",
    )
    parser.add_flag(
        "--size", type=positive_int, default=160, help="bytes per packet (160 = 20 ms of G.711)"
    )
    parser.add_flag(
        "--log-level", type=log_level, default="warning", help="debug, info, warning or error"
    )
    return parser


def load_config(argv: Sequence[str] | None = None) -> LoadConfig:
    args = build_parser().parse_flags(argv)
    transport, relay = args.relay
    if args.user and args.auth_secret:
        raise ConfigError("give --user or --auth-secret, not both")
    if args.user:
        username, sep, password = args.user.partition(":")
        if not sep or not username:
            raise ConfigError("--user must be NAME:PASSWORD")
    elif args.auth_secret:
        username, password = rest_credentials(
            args.auth_secret, "turnscale-load", time.time(), args.duration + 3600
        )
    else:
        raise ConfigError("credentials needed: --user NAME:PASSWORD or --auth-secret SECRET")
    if args.pps and args.peer is None:
        raise ConfigError("--pps needs --peer (where the traffic goes)")
    if args.ramp > args.duration:
        raise ConfigError(f"--ramp ({args.ramp:g}s) is longer than --duration ({args.duration:g}s)")
    return LoadConfig(
        relay=relay,
        transport=transport,
        username=username,
        password=password,
        allocations=args.allocations,
        ramp=args.ramp,
        duration=args.duration,
        peer=args.peer,
        pps=args.pps,
        size=args.size,
        log_level=args.log_level,
    )


@dataclass
class Tally:
    opened: int = 0
    failed: int = 0
    open_now: int = 0
    sent: int = 0
    received: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def line(self, elapsed: float, wanted: int) -> str:
        text = (
            f"{elapsed:6.1f}s  allocations open {self.open_now}/{wanted}  failed {self.failed}"
            f"  packets sent {self.sent} received {self.received}"
        )
        if self.errors:
            common = max(self.errors, key=lambda reason: self.errors[reason])
            text += f"  (last failure: {common})"
        return text


class _Counting(asyncio.DatagramProtocol):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.tally.received += 1


class LoadRun:
    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.tally = Tally()
        self.transports: list[TurnTransport] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, progress: Any = sys.stderr) -> Tally:
        started = time.monotonic()
        tasks = [
            asyncio.create_task(self._ramp(), name="load-ramp"),
            asyncio.create_task(self._traffic(), name="load-traffic"),
            asyncio.create_task(self._progress(started, progress), name="load-progress"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.duration):
                await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_all()
        print(self.tally.line(time.monotonic() - started, self.config.allocations), file=progress)
        return self.tally

    async def _ramp(self) -> None:
        config = self.config
        gate = asyncio.Semaphore(MAX_OPENING)
        spacing = config.ramp / config.allocations
        start = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        for index in range(config.allocations):
            delay = start + index * spacing - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            task = asyncio.create_task(self._open(gate))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    async def _open(self, gate: asyncio.Semaphore) -> None:
        config = self.config
        try:
            transport, _ = await create_turn_endpoint(
                lambda: _Counting(self.tally),
                server_addr=(config.relay.host, config.relay.port),
                username=config.username,
                password=config.password,
                transport=config.transport,
            )
        except Exception as error:  # any failure of one allocation is counted, not fatal
            self.tally.failed += 1
            reason = f"{type(error).__name__}: {error}"[:120]
            self.tally.errors[reason] = self.tally.errors.get(reason, 0) + 1
        else:
            self.transports.append(transport)
            self.tally.opened += 1
            self.tally.open_now += 1
        finally:
            gate.release()

    async def _traffic(self) -> None:
        config = self.config
        if not config.pps or config.peer is None:
            return
        peer = (config.peer.host, config.peer.port)
        payload = bytes(config.size)
        credit = 0.0
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            credit += (now - last) * config.pps
            last = now
            burst = int(credit)
            credit -= burst
            for transport in self.transports:
                for _ in range(burst):
                    transport.sendto(payload, peer)
                    self.tally.sent += 1

    async def _progress(self, started: float, out: Any) -> None:
        while True:
            await asyncio.sleep(1.0)
            print(self.tally.line(time.monotonic() - started, self.config.allocations), file=out)

    async def _close_all(self) -> None:
        transports, self.transports = self.transports, []
        for transport in transports:
            transport.close()  # Refresh with lifetime 0: the relay frees it at once
            self.tally.open_now -= 1
        # Let the Refresh requests leave before the loop ends.
        await asyncio.sleep(0.2 if transports else 0)


async def run(config: LoadConfig) -> Tally:
    """Run the load; SIGINT or SIGTERM ends it early (allocations are released first)."""
    load = LoadRun(config)
    async with runtime.StopSignals() as signals:
        stopper = asyncio.ensure_future(signals.requested.wait())
        stopper.add_done_callback(lambda task: None if task.cancelled() else load.stop())
        try:
            return await load.run()
        finally:
            await runtime.cancel_and_wait(stopper)


def main(argv: Sequence[str]) -> None:
    """``turnscale load``: exit status 1 when not one allocation could be opened."""
    tally = runtime.run_command("turnscale load", argv, load_config, run)
    if tally.opened == 0:
        raise SystemExit(1)
