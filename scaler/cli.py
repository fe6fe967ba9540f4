"""``turnscale``: one command, one sub-command per binary (DESIGN.md, "Command line")."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import uvloop

from scaler import config as scaler_config
from scaler import logs
from scaler.flags import ConfigError, fail

USAGE = """usage: turnscale COMMAND [FLAGS]

commands:
  scaler   the collector: report ingest, /metrics, KEDA gRPC and metrics-api
  relay    a TURN/STUN relay (UDP and TCP) with auth, peer policy, quotas and drain
  run      the embedded default: a scaler, a relay and an echo peer on loopback
  load     open real TURN allocations against a relay fleet, for a while
  auth     the in-cluster ICE credential endpoint (GET /ice) for a Gateway

'turnscale COMMAND --help' lists a command's flags; each also reads TURNSCALE_<FLAG>.
"""


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop; signals are handled by the servers themselves.

    An address that cannot be bound (in use, not local) is one clear error line
    and exit status 1, not a traceback.
    """
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except OSError as error:
        logs.get("turnscale").error("cannot start", error=str(error))
        raise SystemExit(1) from None


def scaler_main(argv: Sequence[str]) -> None:
    program = "turnscale scaler"
    try:
        config = scaler_config.load(argv)
    except ConfigError as error:
        fail(program, error)
    logs.configure(config.log_level)
    from scaler.server import serve

    run_async(lambda: serve(config))


def load_main(argv: Sequence[str]) -> None:
    from relay.load import main as load

    load(argv)


def relay_main(argv: Sequence[str]) -> None:
    from relay.cli import main as relay

    relay(argv)


def auth_main(argv: Sequence[str]) -> None:
    from relay.gateway.ice_server import main as auth

    auth(argv)


def embedded_main(argv: Sequence[str]) -> None:
    from scaler.embedded import main as embedded

    embedded(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "scaler": scaler_main,
    "relay": relay_main,
    "run": embedded_main,
    "load": load_main,
    "auth": auth_main,
}


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        raise SystemExit(0 if args else 2)
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"turnscale: error: unknown command {args[0]!r}\n\n{USAGE}", end="", file=sys.stderr)
        raise SystemExit(2)
    command(args[1:])
