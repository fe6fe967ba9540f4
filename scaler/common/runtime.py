"""One process runtime for every ``turnscale`` command.

Each command's ``main`` is the same five steps, done here once by :func:`run_command`:
parse the flags into one frozen config (a bad flag: one line naming it, exit 2), configure
the logs, prepare the process (for the relay: lift the open-file limit), pick the event
loop, and run the command's coroutine. Anything that stops the start-up (an address in
use, credentials that cannot load) is one ``cannot start`` log line and exit status 1,
never a traceback, whichever event loop runs.

:class:`StopSignals` is how a server learns it should stop: the first SIGTERM or SIGINT
sets ``requested``, a second one sets ``forced`` (the relay ends its drain at once on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

from scaler.common import logs
from scaler.common.flags import ConfigError, fail

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
EVENT_LOOPS: Final = ("uvloop", "asyncio")

Config = TypeVar("Config")
Result = TypeVar("Result")


class StopSignals:
    """SIGTERM/SIGINT handlers for the life of an ``async with`` block.

    The first signal sets :attr:`requested`, any further one :attr:`forced`. The handlers
    are removed on exit, so a signal after the block gets Python's default behaviour.
    """

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _on_signal(self) -> None:
        if self.requested.is_set():
            self.forced.set()
        self.requested.set()

    async def __aenter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            self._loop.add_signal_handler(signum, self._on_signal)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        for signum in STOP_SIGNALS:
            self._loop.remove_signal_handler(signum)


async def stop_requested() -> None:
    """Return at the first SIGTERM or SIGINT; the handlers are removed again."""
    async with StopSignals() as signals:
        await signals.requested.wait()


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it to end; its cancellation is not re-raised here.

    A cancellation of the caller itself still propagates.
    """
    if task is None or task.done():
        if task is not None and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not warn about it
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError


def _loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if event_loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if event_loop == "asyncio":
        return None
    raise ValueError(f"unknown event loop {event_loop!r}")


def run(
    program: str,
    main: Callable[[], Coroutine[Any, Any, Result]],
    *,
    event_loop: str = "uvloop",
    startup_errors: tuple[type[Exception], ...] = (),
) -> Result:
    """Run ``main`` on the chosen loop; a start-up error is one log line and exit 1.

    ``OSError`` (a port in use, an address that is not local) always counts as a start-up
    error; ``startup_errors`` adds the command's own.
    """
    caught: tuple[type[Exception], ...] = (OSError, *startup_errors)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(event_loop)) as runner:
            return runner.run(main())
    except caught as error:
        logs.get("turnscale").error("cannot start", program=program, error=str(error))
        raise SystemExit(1) from None


def run_command(
    program: str,
    argv: Sequence[str],
    load: Callable[[Sequence[str]], Config],
    serve: Callable[[Config], Coroutine[Any, Any, Result]],
    *,
    log_level: Callable[[Config], str] = lambda config: str(config.log_level),  # type: ignore[attr-defined]
    event_loop: Callable[[Config], str] = lambda _config: "uvloop",
    prepare: Callable[[Config], None] | None = None,
    startup_errors: tuple[type[Exception], ...] = (),
) -> Result:
    """The five steps of every command's ``main``: flags, logs, prepare, loop, serve."""
    try:
        config = load(argv)
    except ConfigError as error:
        fail(program, error)
    logs.configure(log_level(config))
    if prepare is not None:
        prepare(config)
    return run(
        program,
        lambda: serve(config),
        event_loop=event_loop(config),
        startup_errors=startup_errors,
    )
