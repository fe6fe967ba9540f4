"""``turnscale``: the dispatcher, one sub-command per binary.

Sub-commands are named as ``"module:function"`` strings and imported only when chosen, so
``turnscale scaler`` never loads the relay and ``turnscale relay`` never loads the scaler's
stack; this module imports nothing of either half.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Final

USAGE: Final = """usage: turnscale COMMAND [FLAGS]

commands:
  scaler   the collector: report ingest, /metrics, KEDA gRPC and metrics-api
  relay    a TURN/STUN relay (UDP and TCP) with auth, peer policy, quotas and drain
  run      the embedded default: a scaler, a relay and an echo peer on loopback
  load     open real TURN allocations against a relay fleet, for a while
  auth     the in-cluster ICE credential endpoint (GET /ice) for a Gateway

'turnscale COMMAND --help' lists a command's flags; each also reads TURNSCALE_<FLAG>.
"""

COMMANDS: Final = {
    "scaler": "scaler.server:main",
    "relay": "relay.cli:main",
    "run": "relay.embedded:main",
    "load": "relay.tools.load:main",
    "auth": "relay.gateway.ice_server:main",
}


def resolve(target: str) -> Callable[[Sequence[str]], None]:
    """``"package.module:function"`` -> the function, importing the module now."""
    module_name, _, function = target.partition(":")
    command: Callable[[Sequence[str]], None] = getattr(
        importlib.import_module(module_name), function
    )
    return command


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        raise SystemExit(0 if args else 2)
    target = COMMANDS.get(args[0])
    if target is None:
        print(f"turnscale: error: unknown command {args[0]!r}\n\n{USAGE}", end="", file=sys.stderr)
        raise SystemExit(2)
    resolve(target)(args[1:])
