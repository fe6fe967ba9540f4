"""Where a relay reports to and as whom: the ``--scaler`` and identity flags, validated."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from scaler.common import names
from scaler.common.flags import ConfigError, FlagParser, parse_duration, read_token

DEFAULT_GATEWAY = "stunner-gateway"


@dataclass(frozen=True, slots=True)
class ReportingConfig:
    scalers: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    pod: str = "relay"
    namespace: str = "default"
    gateway: str = "stunner-gateway"
    interval: float = 5.0


def scaler_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as error:
        raise ValueError(f"{text!r}: {error}") from None
    return text.strip()


def default_pod() -> str:
    """The hostname, as Kubernetes sets it to the pod name."""
    return socket.gethostname().lower()


def add_flags(parser: FlagParser) -> None:
    parser.add_flag(
        "--scaler",
        action="append",
        type=scaler_url,
        help="scaler to push reports to, repeatable; a name with several addresses (a "
        "headless Service) gets reports at every address",
    )
    parser.add_flag(
        "--scaler-token-file",
        type=Path,
        default=None,
        help="file holding the bearer token the scaler expects",
    )
    parser.add_flag(
        "--pod", default=None, help="this relay's name in reports (default: the hostname)"
    )
    parser.add_flag("--namespace", default="default", help="this relay's namespace in reports")
    parser.add_flag(
        "--gateway",
        default=None,
        help="the relay fleet (Gateway) this relay belongs to (default: stunner-gateway; with "
        "--config, the Gateway's name)",
    )
    parser.add_flag(
        "--report-interval",
        type=parse_duration,
        default="5s",
        help="heartbeat: the longest time between two reports",
    )


def from_args(args: argparse.Namespace) -> ReportingConfig:
    pod = args.pod or default_pod()
    _check_name("--pod", pod, names.is_dns_subdomain, names.SUBDOMAIN_MAX)
    _check_name("--namespace", args.namespace, names.is_dns_label, names.LABEL_MAX)
    gateway = args.gateway or DEFAULT_GATEWAY
    _check_name("--gateway", gateway, names.is_dns_subdomain, names.SUBDOMAIN_MAX)
    if not 0 < args.report_interval <= 60:
        raise ConfigError("--report-interval must be more than 0s and at most 60s")
    token = None
    if args.scaler_token_file is not None:
        token = read_token(args.scaler_token_file, "--scaler-token-file")
    return ReportingConfig(
        scalers=tuple(args.scaler),
        token=token,
        pod=pod,
        namespace=args.namespace,
        gateway=gateway,
        interval=args.report_interval,
    )


def _check_name(flag: str, value: str, valid: Callable[[str], bool], longest: int) -> None:
    if not valid(value):
        raise ConfigError(
            f"{flag} {value!r} is not a Kubernetes name (lowercase letters, digits and '-', "
            f"at most {longest} characters)"
        )
