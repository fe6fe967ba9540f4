"""``turnscale relay``'s settings: the relay's flags and the Gateway API flags, composed.

:mod:`relay.config` declares the relay's own flags and builds :class:`relay.config.RelayConfig`;
:mod:`relay.gateway.options` declares ``--config``, ``--kubernetes`` and their companions and
builds :class:`relay.gateway.options.GatewayOptions`. This module puts both on one parser and,
when the Gateway API objects configure the relay, hands their listeners, credentials and peers
to the relay config as :class:`relay.config.Overrides`. So the relay's configuration never
imports the gateway package: the arrows run from here down to both.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from relay import config
from relay.config import RelayConfig
from relay.gateway import options as gateway_options
from relay.gateway.options import GatewayOptions
from relay.reporting import config as reporting
from scaler.common.flags import FlagParser

__all__ = ["Settings", "build_parser", "from_args", "load"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``turnscale relay`` runs with. Credentials are left out of ``repr``."""

    relay: RelayConfig
    #: Set with ``--config`` or ``--kubernetes``: where the Gateway API objects come from.
    gateway: GatewayOptions | None = None


def build_parser(prog: str = "turnscale relay") -> FlagParser:
    """Every flag of ``turnscale relay``: the relay's, the reporting ones, the gateway's."""
    parser = config.build_parser(prog)
    gateway_options.add_flags(parser)
    return parser


def from_args(args: argparse.Namespace) -> Settings:
    """The settings of parsed flags; :class:`scaler.common.flags.ConfigError` names the flag
    (or the file, object and field) of the first problem."""
    report_to = reporting.from_args(args)
    gateway = gateway_options.from_args(args, report_to.namespace)
    overrides = None if gateway is None else gateway_options.overrides(gateway)
    relay = config.from_args(args, report_to=report_to, overrides=overrides)
    return Settings(relay, gateway)


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags over ``TURNSCALE_*`` variables; raise ConfigError naming the flag."""
    return from_args(build_parser().parse_flags(argv, environ))
