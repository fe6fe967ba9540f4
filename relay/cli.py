"""``turnscale relay`` (and ``python -m relay``): parse flags, configure logs, serve."""

from __future__ import annotations

import resource
from collections.abc import Coroutine, Sequence
from typing import Any

from relay.settings import Settings, load
from scaler.common import runtime

PROGRAM = "turnscale relay"


def raise_file_limit(_settings: Settings | None = None) -> None:
    """One socket per allocation: lift the soft open-file limit to the hard one."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass


def serve(settings: Settings) -> Coroutine[Any, Any, None]:
    """The relay from flags, from Gateway API files, or live from Kubernetes."""
    if settings.gateway is None:
        from relay.net.server import serve as serve_flags

        return serve_flags(settings.relay)
    from relay.gateway.run import serve_files, serve_live

    run = serve_live if settings.gateway.kubernetes is not None else serve_files
    return run(settings.relay, settings.gateway)


def main(argv: Sequence[str]) -> None:
    from relay.net.server import StartupError

    runtime.run_command(
        PROGRAM,
        argv,
        load,
        serve,
        log_level=lambda settings: settings.relay.log_level,
        event_loop=lambda settings: settings.relay.event_loop,
        prepare=raise_file_limit,
        startup_errors=(StartupError,),
    )
