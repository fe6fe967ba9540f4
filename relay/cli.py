"""``turnscale relay`` (and ``python -m relay``): parse flags, configure logs, serve."""

from __future__ import annotations

import resource
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from relay.config import RelayConfig, load
from scaler.common import runtime

PROGRAM = "turnscale relay"


def raise_file_limit(_config: RelayConfig | None = None) -> None:
    """One socket per allocation: lift the soft open-file limit to the hard one."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass


def serve(config: RelayConfig) -> Coroutine[Any, Any, None]:
    """The relay from flags, from Gateway API files, or live from Kubernetes."""
    from relay.net.server import serve as serve_flags

    run: Callable[[RelayConfig], Coroutine[Any, Any, None]] = serve_flags
    if config.gateway is not None:
        from relay.gateway.run import serve_files, serve_live

        run = serve_live if config.gateway.kubernetes is not None else serve_files
    return run(config)


def main(argv: Sequence[str]) -> None:
    from relay.net.server import StartupError

    runtime.run_command(
        PROGRAM,
        argv,
        load,
        serve,
        event_loop=lambda config: config.event_loop,
        prepare=raise_file_limit,
        startup_errors=(StartupError,),
    )
