"""Command-line flags that also read ``TURNSCALE_<FLAG>`` environment variables.

Every binary parses its flags once, at start-up, into one frozen config object.
A flag given on the command line wins over its environment variable, which wins
over the default. A bad value from either source is a :class:`ConfigError` that
names the flag (and the variable), never a traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

ENV_PREFIX = "TURNSCALE_"


class ConfigError(Exception):
    """A flag or environment variable has a value the program cannot use."""


@dataclass(frozen=True, slots=True)
class HostPort:
    """A listen or connect address; ``host`` is an IP literal or a name."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def env_name(flag: str) -> str:
    """``--min-replicas`` -> ``TURNSCALE_MIN_REPLICAS``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def parse_host_port(text: str) -> HostPort:
    """Parse ``HOST:PORT`` or ``[V6]:PORT``; an empty host means all IPv4 addresses."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\[\]:]*):(\d{1,5})", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not HOST:PORT (use [ADDR]:PORT for IPv6)")
    host = match.group(1) or match.group(3) or "0.0.0.0"
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0-65535")
    if match.group(1):
        ipaddress.IPv6Address(host)
    return HostPort(host, port)


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse ``250ms``, ``15s``, ``2m``, ``1h`` or a bare number of seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 15s, 250ms, 2m or 1h")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is not a positive whole number")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


LOG_LEVELS = ("debug", "info", "warning", "error")


def log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are ConfigErrors and whose defaults come from env."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)

    def add_flag(self, flag: str, **kwargs: Any) -> argparse.Action:
        """Add ``--flag``; its help names the ``TURNSCALE_*`` variable that also sets it."""
        help_text = kwargs.pop("help", "")
        kwargs["help"] = f"{help_text} [env {env_name(flag)}]".strip()
        return self.add_argument(flag, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)

    def parse_flags(
        self, argv: Sequence[str] | None, environ: Mapping[str, str] | None = None
    ) -> argparse.Namespace:
        """Parse ``argv`` over environment-variable defaults; types run on both sources."""
        environ = os.environ if environ is None else environ
        namespace = argparse.Namespace()
        env_lists: dict[str, int] = {}
        for action in self._actions:
            long_flags = [s for s in action.option_strings if s.startswith("--")]
            if not long_flags or action.dest == "help":
                continue
            name = env_name(long_flags[0])
            raw = environ.get(name)
            if raw is None:
                continue
            value = _env_value(action, long_flags[0], name, raw)
            if isinstance(value, _EnvList):
                env_lists[action.dest] = len(value)
            setattr(namespace, action.dest, value)
        args = self.parse_args(list(sys.argv[1:] if argv is None else argv), namespace)
        return _replace_env_appends(self, args, env_lists)


def _convert(action: argparse.Action, flag: str, source: str, raw: str) -> Any:
    convert: Callable[[str], Any] = action.type if callable(action.type) else str
    try:
        value = convert(raw)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{flag} (from {source}): {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{flag} (from {source}): {raw!r} is not one of {choices}")
    return value


def _env_value(action: argparse.Action, flag: str, name: str, raw: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{flag} (from {name}): {raw!r} is not true or false")
    if isinstance(action, argparse._AppendAction):
        # Repeatable flags take a comma-separated list from the environment.
        items = [item.strip() for item in raw.split(",") if item.strip()]
        return _EnvList(_convert(action, flag, name, item) for item in items)
    return _convert(action, flag, name, raw)


class _EnvList(list[Any]):
    """Marks a repeatable flag's value as coming from the environment."""


def _replace_env_appends(
    parser: argparse.ArgumentParser, args: argparse.Namespace, env_lists: Mapping[str, int]
) -> argparse.Namespace:
    # argparse appends command-line values onto (a copy of) the env list; the command line
    # must win, so keep only what follows the env items.
    for action in parser._actions:
        if not isinstance(action, argparse._AppendAction):
            continue
        value = getattr(args, action.dest, None)
        from_env = env_lists.get(action.dest)
        if from_env is not None and value is not None and len(value) > from_env:
            setattr(args, action.dest, list(value[from_env:]))
        elif value is None:
            setattr(args, action.dest, [])
        else:
            setattr(args, action.dest, list(value))
    return args


def fail(program: str, error: ConfigError) -> NoReturn:
    """Report a configuration error the way users expect from a CLI: one line, status 2."""
    print(f"{program}: error: {error}", file=sys.stderr)
    print(f"Run '{program} --help' for the flags and their TURNSCALE_* variables.", file=sys.stderr)
    raise SystemExit(2)
