"""``turnscale auth``: the ICE credential endpoint application backends call in-cluster.

It reads the same Gateway API objects as the relays (``--config FILE...`` with Secrets from
``--secrets-dir``, or live with ``--kubernetes``: the Gateway ``--namespace``/``--gateway``,
followed as it changes) and answers, on ``--http`` (default ``0.0.0.0:8087``):

* ``GET /ice?service=turn&username=U&ttl=S``: an RTCConfiguration-style JSON object with
  freshly minted TURN credentials (:mod:`relay.gateway.ice`); 400 ``{"error": ...}`` for a
  bad query, 503 while no gateway configuration is known;
* ``GET /healthz`` (alive) and ``GET /readyz`` (200 once a configuration is known);
* ``GET /``: the ICE tester page (:mod:`relay.gateway.tester`), served to anyone: it holds
  no secret, and calls ``/ice`` with the caller token an operator puts in the link's
  fragment (``#token=...``), which no browser sends to a server.

``/ice`` mints only for callers with a token of ``--caller-token-file``, each at most
``--mint-rate`` times a second (:mod:`relay.gateway.callers`): 401 without a known token,
429 with ``Retry-After`` over the rate. Without caller tokens it serves on loopback only
(for ``turnscale run`` and a ``kubectl port-forward``).

It holds the gateway's shared secret, so it is a separate small service reached through a
ClusterIP Service only: never through the relays' TURN LoadBalancer, and not on the scaler,
which every relay and Prometheus talk to and which has no business with TURN secrets.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from relay.gateway import options as gateway_options
from relay.gateway import tester
from relay.gateway.callers import CallerGate, read_caller_tokens
from relay.gateway.ice import IceError, ice_configuration
from relay.gateway.live import Follower
from relay.gateway.translate import EphemeralAuth, GatewaySettings
from relay.reporting.config import DEFAULT_GATEWAY
from scaler.common import logs, runtime, sockets
from scaler.common.flags import (
    ConfigError,
    FlagParser,
    HostPort,
    log_level,
    parse_host_port,
    positive_int,
)
from scaler.common.kube.access import KubeAccess
from scaler.common.kube.reflector import DEFAULT_TIMING, WatchTiming

__all__ = [
    "AuthConfig",
    "IceState",
    "LiveIce",
    "create_app",
    "ice_tester_url",
    "load",
    "main",
    "serve",
]

PROGRAM: Final = "turnscale auth"
log = logs.get("relay.ice")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Everything ``turnscale auth`` runs with (the shared secret is in ``settings``)."""

    http: HostPort
    #: From ``--config``; None with ``--kubernetes`` (read live).
    settings: GatewaySettings | None
    addresses: tuple[str, ...]
    files: tuple[Path, ...] = ()
    log_level: str = "info"
    #: ``--kubernetes``: where the API is; ``gateway`` names the Gateway.
    kubernetes: KubeAccess | None = None
    gateway: tuple[str, str] = ("default", "stunner-gateway")
    gateway_config: tuple[str, str] | None = None
    #: ``--caller-token-file``: the callers' bearer tokens; empty on loopback only.
    caller_tokens: tuple[str, ...] = field(default=(), repr=False)
    mint_rate: float = 10.0
    mint_burst: int = 20


@dataclass(slots=True)
class IceState:
    """What ``/ice`` mints from; live mode replaces ``settings`` as the objects change."""

    settings: GatewaySettings | None
    addresses: tuple[str, ...] = ()
    #: Unix seconds.
    clock: Callable[[], float] = field(default=time.time)
    #: URLs answered beside the Gateway listeners' (``turnscale run``'s ``turns:`` listener).
    extra_urls: tuple[str, ...] = ()

    def public_addresses(self) -> tuple[str, ...]:
        if self.addresses or self.settings is None:
            return self.addresses
        return self.settings.addresses


STATE: Final = web.AppKey("ice", IceState)
CALLERS: Final = web.AppKey("callers", CallerGate)


def _public_address(text: str) -> str:
    value = text.strip()
    if not value or any(c in value for c in "/?# []"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or host name")
    return value


def build_parser() -> FlagParser:
    parser = FlagParser(
        prog=PROGRAM,
        description="The ICE credential endpoint: GET /ice mints TURN credentials for the "
        "Gateway described by the Gateway API objects. Serve it in-cluster only.",
    )
    parser.add_flag("--http", type=parse_host_port, default="0.0.0.0:8087", help="HTTP address")
    gateway_options.add_source_flags(parser)
    parser.add_flag(
        "--gateway",
        default=None,
        help="the Gateway (default: the only one in the files; with --kubernetes, stunner-gateway)",
    )
    parser.add_flag(
        "--namespace",
        default="default",
        help="the Gateway's namespace with --kubernetes; with --config, that of objects "
        "that name none",
    )
    parser.add_flag(
        "--kubernetes",
        action="store_true",
        default=False,
        help="read the Gateway API objects live from the Kubernetes API",
    )
    parser.add_flag(
        "--kubeconfig",
        type=Path,
        default=None,
        help="credentials for --kubernetes (default: the pod's service account, else "
        "$KUBECONFIG or ~/.kube/config)",
    )
    parser.add_flag(
        "--public-address",
        action="append",
        type=_public_address,
        metavar="HOST",
        help="address clients reach the Gateway at, repeatable (default: the Gateway's "
        "spec.addresses)",
    )
    parser.add_flag(
        "--caller-token-file",
        type=Path,
        default=None,
        help="bearer tokens of the callers (application backends) allowed to mint, one per "
        "line; required unless --http is a loopback address",
    )
    parser.add_flag(
        "--mint-rate",
        type=_positive_float,
        default=10.0,
        help="credentials one caller may mint per second, on average",
    )
    parser.add_flag(
        "--mint-burst",
        type=positive_int,
        default=20,
        help="credentials one caller may mint at once before --mint-rate applies",
    )
    parser.add_flag(
        "--log-level", type=log_level, default="info", help="debug, info, warning or error"
    )
    return parser


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"{text!r} is not a positive number")
    return value


def _callers(args: argparse.Namespace) -> dict[str, Any]:
    """The caller settings; a non-loopback endpoint without caller tokens is refused."""
    tokens = read_caller_tokens(args.caller_token_file) if args.caller_token_file else ()
    if not tokens and not sockets.is_loopback(args.http.host):
        raise ConfigError(
            f"--http {args.http} is reachable from other machines: give --caller-token-file "
            "(the bearer tokens application backends send) or listen on 127.0.0.1"
        )
    return {"caller_tokens": tokens, "mint_rate": args.mint_rate, "mint_burst": args.mint_burst}


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> AuthConfig:
    """Parse flags over ``TURNSCALE_*`` variables; ConfigError names the flag or object."""
    args = build_parser().parse_flags(argv, environ)
    if args.kubernetes:
        if args.config:
            raise ConfigError("--config cannot be combined with --kubernetes: choose one source")
        return AuthConfig(
            http=args.http,
            settings=None,
            addresses=tuple(args.public_address),
            log_level=args.log_level,
            kubernetes=gateway_options.kube_settings(args.kubeconfig, args.namespace),
            gateway=(args.namespace, args.gateway or DEFAULT_GATEWAY),
            gateway_config=args.gateway_config,
            **_callers(args),
        )
    if not args.config:
        raise ConfigError(
            "give --config FILE... or --kubernetes: where the Gateway API objects are"
        )
    settings, _ = gateway_options.load_settings(args, args.gateway, args.namespace)
    addresses = tuple(args.public_address) or settings.addresses
    if not addresses:
        raise ConfigError(
            f"no public address for Gateway {settings.namespace}/{settings.name}: give "
            "--public-address or the Gateway's spec.addresses"
        )
    return AuthConfig(
        http=args.http,
        settings=settings,
        addresses=tuple(args.public_address),
        files=tuple(args.config),
        log_level=args.log_level,
        **_callers(args),
    )


async def get_ice(request: web.Request) -> web.Response:
    state = request.app[STATE]
    headers = {"Cache-Control": "no-store"}
    gate = request.app.get(CALLERS)
    if gate is None and not _loopback_host(request.host):
        # Anyone on this machine may mint here; a web page whose name an attacker re-points
        # at 127.0.0.1 (DNS rebinding) is same-origin with this endpoint but sends its own
        # name as Host, so only loopback names and addresses are answered.
        return web.json_response(
            {"error": "Host must be a loopback address or localhost"}, status=403, headers=headers
        )
    if gate is not None:
        caller = gate.identify(request.headers.get("Authorization"))
        if caller is None:
            return web.json_response(
                {"error": "missing or unknown caller token (Authorization: Bearer ...)"},
                status=401,
                headers={**headers, "WWW-Authenticate": 'Bearer realm="turnscale-ice"'},
            )
        wait = gate.admit(caller)
        if wait > 0:
            return web.json_response(
                {"error": f"{caller} mints faster than --mint-rate allows"},
                status=429,
                headers={**headers, "Retry-After": str(max(1, math.ceil(wait)))},
            )
    if state.settings is None:
        return web.json_response(
            {"error": "no gateway configuration yet"}, status=503, headers=headers
        )
    addresses = state.public_addresses()
    if not addresses:
        return web.json_response(
            {"error": "no public address: give --public-address or the Gateway's spec.addresses"},
            status=503,
            headers=headers,
        )
    try:
        body = ice_configuration(state.settings, addresses, request.query, state.clock())
    except IceError as exc:
        return web.json_response({"error": str(exc)}, status=400, headers=headers)
    body["iceServers"][0]["urls"].extend(state.extra_urls)
    return web.json_response(body, headers=headers)


def _loopback_host(host: str) -> bool:
    """Whether a Host header (``name``, ``name:port``, ``[v6]:port``) names loopback."""
    name = host.rpartition("]")[0].lstrip("[") if host.startswith("[") else host.partition(":")[0]
    return sockets.is_loopback(name)


async def get_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def get_readyz(request: web.Request) -> web.Response:
    ready = request.app[STATE].settings is not None
    return web.json_response({"ready": ready}, status=200 if ready else 503)


def create_app(state: IceState, callers: CallerGate | None = None) -> web.Application:
    """The endpoint; ``callers`` None serves anyone (a loopback-only endpoint)."""
    app = web.Application()
    app[STATE] = state
    if callers is not None:
        app[CALLERS] = callers
    app.router.add_get("/ice", get_ice)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    tester.add_routes(app)
    return app


def ice_tester_url(http: HostPort, *, token_needed: bool) -> str:
    """Where the ICE tester page is; with caller tokens, the fragment to complete."""
    host = "127.0.0.1" if http.host in ("0.0.0.0", "") else http.host
    host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return f"http://{host}:{http.port}/" + ("#token=CALLER-TOKEN" if token_needed else "")


class LiveIce(Follower):
    """Keeps ``state.settings`` at the Gateway's last good configuration (``--kubernetes``)."""

    def __init__(
        self,
        state: IceState,
        apis: Any,
        key: tuple[str, str],
        gateway_config: tuple[str, str] | None = None,
        *,
        timing: WatchTiming = DEFAULT_TIMING,
    ) -> None:
        super().__init__(apis, key, timing)
        self.state = state
        self.gateway_config = gateway_config

    async def reconcile(self) -> None:
        reading = await self.read(self.gateway_config)
        if reading is not None and reading.settings is not None:
            if reading.settings != self.state.settings:
                log.info("ice endpoint configured", gateway=f"{self.key[0]}/{self.key[1]}")
            self.state.settings = reading.settings


async def serve(config: AuthConfig) -> None:
    """Serve ``/ice`` until SIGTERM or SIGINT."""
    state = IceState(config.settings, config.addresses)
    live: LiveIce | None = None
    kube = None
    if config.kubernetes is not None:
        from relay.gateway.kube import Apis
        from scaler.common.kube.client import connect

        kube = await connect(config.kubernetes)
        live = LiveIce(state, Apis(kube.api_client), config.gateway, config.gateway_config)
        await live.start()
    callers = None
    if config.caller_tokens:
        callers = CallerGate(
            config.caller_tokens,
            rate=config.mint_rate,
            burst=config.mint_burst,
            clock=time.monotonic,
        )
    app = create_app(state, callers)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        sock = sockets.bind_tcp(config.http.host, config.http.port)
        await web.SockSite(runner, sock).start()
        bound = HostPort(config.http.host, sock.getsockname()[1])
        settings = config.settings
        log.info(
            "ice endpoint serving",
            http=str(config.http),
            gateway=f"{settings.namespace}/{settings.name}"
            if settings is not None
            else f"{config.gateway[0]}/{config.gateway[1]} (live)",
            addresses=list(state.public_addresses()),
            auth="live"
            if settings is None
            else "ephemeral"
            if isinstance(settings.auth, EphemeralAuth)
            else "static",
            callers=len(config.caller_tokens) or "anyone on loopback",
            mint_rate=config.mint_rate if config.caller_tokens else None,
            tester=ice_tester_url(bound, token_needed=bool(config.caller_tokens)),
        )
        await runtime.stop_requested()
    finally:
        await runner.cleanup()
        if live is not None:
            await live.stop()
        if kube is not None:
            await kube.close()


def main(argv: Sequence[str]) -> None:
    """``turnscale auth``."""
    from scaler.common.kube.client import ClientSetupError

    runtime.run_command(PROGRAM, argv, load, serve, startup_errors=(ClientSetupError,))
