"""``turnscale relay`` (and ``python -m relay``): parse flags, configure logs, serve."""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from relay.config import RelayConfig, load
from scaler import logs
from scaler.flags import ConfigError, fail

PROGRAM = "turnscale relay"


def raise_file_limit() -> None:
    """One socket per allocation: lift the soft open-file limit to the hard one."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str]) -> None:
    try:
        config = load(argv)
    except ConfigError as error:
        fail(PROGRAM, error)
    logs.configure(config.log_level)
    raise_file_limit()
    from relay.server import StartupError, serve

    run: Callable[[RelayConfig], Coroutine[Any, Any, None]] = serve
    if config.gateway is not None:
        from relay.gateway.run import serve_files, serve_live

        run = serve_live if config.gateway.kubernetes is not None else serve_files
    try:
        if config.event_loop == "uvloop":
            from scaler.cli import run_async

            run_async(lambda: run(config))
        else:
            asyncio.run(run(config))
    except StartupError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
