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
from pathlib import Path
from typing import Any, Final, NoReturn

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


@dataclass(frozen=True, slots=True)
class Flag:
    """One declared flag: what the environment variable and the command line feed."""

    flag: str  # the long option, ``--min-replicas``
    dest: str  # the attribute on the parsed namespace
    kind: str  # "value", "switch" (store_true) or "list" (repeatable, append)
    convert: Callable[[str], Any]
    choices: tuple[Any, ...] | None

    @property
    def env(self) -> str:
        return env_name(self.flag)


_KINDS: Final = {None: "value", "store": "value", "store_true": "switch", "append": "list"}


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are ConfigErrors and whose defaults come from env.

    Flags are declared with :meth:`add_flag`, which records what each one is (a value, a
    switch or a repeatable list), so reading the environment needs nothing of argparse's
    internals.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)
        self._flags: list[Flag] = []

    def add_flag(self, flag: str, **kwargs: Any) -> argparse.Action:
        """Add ``--flag``; its help names the ``TURNSCALE_*`` variable that also sets it.

        ``action`` may be omitted (a value), ``"store_true"`` (a switch) or ``"append"``
        (repeatable; the variable takes a comma-separated list).
        """
        action = kwargs.get("action")
        if action not in _KINDS:
            raise TypeError(f"add_flag: unsupported action {action!r}")
        kind = _KINDS[action]
        if kind == "list":
            # The command line's list replaces the environment's, so argparse appends onto
            # a fresh None and the environment fills in only when the flag is absent.
            kwargs["default"] = None
        help_text = kwargs.pop("help", "")
        kwargs["help"] = f"{help_text} [env {env_name(flag)}]".strip()
        added = self.add_argument(flag, **kwargs)
        convert = kwargs.get("type")
        choices = kwargs.get("choices")
        self._flags.append(
            Flag(
                flag,
                added.dest,
                kind,
                convert if callable(convert) else str,
                tuple(choices) if choices is not None else None,
            )
        )
        return added

    def flags(self) -> tuple[Flag, ...]:
        """Every flag declared with :meth:`add_flag`, in declaration order."""
        return tuple(self._flags)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)

    def parse_flags(
        self, argv: Sequence[str] | None, environ: Mapping[str, str] | None = None
    ) -> argparse.Namespace:
        """Parse ``argv`` over environment-variable defaults; types run on both sources."""
        environ = os.environ if environ is None else environ
        namespace = argparse.Namespace()
        from_env: dict[str, Any] = {}
        for flag in self._flags:
            raw = environ.get(flag.env)
            if raw is None:
                continue
            value = _env_value(flag, raw)
            if flag.kind == "list":
                from_env[flag.dest] = value
            else:
                setattr(namespace, flag.dest, value)
        args = self.parse_args(list(sys.argv[1:] if argv is None else argv), namespace)
        for flag in self._flags:
            if flag.kind == "list" and getattr(args, flag.dest, None) is None:
                setattr(args, flag.dest, list(from_env.get(flag.dest, [])))
        return args


def _convert(flag: Flag, source: str, raw: str) -> Any:
    try:
        value = flag.convert(raw)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{flag.flag} (from {source}): {exc}") from None
    if flag.choices is not None and value not in flag.choices:
        choices = ", ".join(map(str, flag.choices))
        raise ConfigError(f"{flag.flag} (from {source}): {raw!r} is not one of {choices}")
    return value


def _env_value(flag: Flag, raw: str) -> Any:
    if flag.kind == "switch":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{flag.flag} (from {flag.env}): {raw!r} is not true or false")
    if flag.kind == "list":
        # Repeatable flags take a comma-separated list from the environment.
        items = [item.strip() for item in raw.split(",") if item.strip()]
        return [_convert(flag, flag.env, item) for item in items]
    return _convert(flag, flag.env, raw)


def read_token(path: Path, flag: str = "--token-file") -> str:
    """Read a bearer token from a mounted Secret file; surrounding whitespace is not part of it."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag}: cannot read {str(path)!r}: {exc}") from None
    if not token:
        raise ConfigError(f"{flag}: {str(path)!r} is empty")
    if any(ch.isspace() for ch in token):
        raise ConfigError(f"{flag}: the token in {str(path)!r} contains white space")
    return token


def fail(program: str, error: ConfigError) -> NoReturn:
    """Report a configuration error the way users expect from a CLI: one line, status 2."""
    print(f"{program}: error: {error}", file=sys.stderr)
    print(f"Run '{program} --help' for the flags and their TURNSCALE_* variables.", file=sys.stderr)
    raise SystemExit(2)
