"""``turnscale scaler`` configuration: one frozen object, parsed and validated at start."""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scaler.common.flags import (
    ConfigError,
    FlagParser,
    HostPort,
    log_level,
    non_negative_int,
    parse_duration,
    parse_host_port,
    positive_int,
    read_token,
)
from scaler.common.sockets import is_loopback
from scaler.common.units import parse_bandwidth
from scaler.kube import settings as kube_settings
from scaler.rates import DEFAULT_WINDOW
from scaler.scaling import ScalingPolicy

#: A window shorter than a relay's report interval would hold one report at a time.
MIN_BANDWIDTH_WINDOW: Final = 1.0


@dataclass(frozen=True, slots=True)
class ScalerConfig:
    http: HostPort
    grpc: HostPort
    policy: ScalingPolicy
    stale_after: float
    expire_after: float
    token: str | None
    max_relays: int
    log_level: str
    # TLS for the gRPC listener (KEDA's enableTLS); a client CA makes it mutual TLS.
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    grpc_client_ca: Path | None = None
    # The Kubernetes integration (--kubernetes); None: off, --expire-after for all relays.
    kubernetes: kube_settings.KubeSettings | None = None
    # --insecure-open-reports: accept reports from anyone on a non-loopback address.
    open_reports: bool = False
    # --bandwidth-window: relayed bytes/s are averaged over this long (scaler.rates).
    bandwidth_window: float = DEFAULT_WINDOW
    # --fleet-user-quota: allocations per user across the fleet; 0: off.
    fleet_user_quota: int = 0


def optional_path(text: str) -> Path | None:
    """A file path; empty (``TURNSCALE_GRPC_TLS_CERT=""``) means not given."""
    return Path(text) if text.strip() else None


def optional_bandwidth(text: str) -> int | None:
    """Bytes per second of ``200Mbit``, ``25MB``...; empty or ``off`` means no target."""
    if text.strip().lower() in ("", "off"):
        return None
    try:
        return parse_bandwidth(text)
    except ValueError as error:
        # argparse shows an ArgumentTypeError's message, and only "invalid value" otherwise.
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser(prog: str = "turnscale scaler") -> FlagParser:
    parser = FlagParser(
        prog=prog,
        description="The turnscale collector: relay report ingest, Prometheus metrics, "
        "KEDA external scaler (gRPC) and metrics-api (HTTP).",
    )
    parser.add_flag(
        "--http",
        type=parse_host_port,
        default="0.0.0.0:8080",
        help="HTTP listen address: reports, /metrics, /v1/scale, health",
    )
    parser.add_flag(
        "--grpc",
        type=parse_host_port,
        default="0.0.0.0:9090",
        help="gRPC listen address: KEDA externalscaler and grpc.health.v1",
    )
    parser.add_flag(
        "--grpc-tls-cert",
        type=optional_path,
        default=None,
        help="PEM certificate (chain) for gRPC TLS, for KEDA's enableTLS; needs --grpc-tls-key",
    )
    parser.add_flag(
        "--grpc-tls-key",
        type=optional_path,
        default=None,
        help="PEM private key (unencrypted) of --grpc-tls-cert",
    )
    parser.add_flag(
        "--grpc-client-ca",
        type=optional_path,
        default=None,
        help="PEM CA bundle: gRPC clients must present a certificate it signed (mutual TLS)",
    )
    parser.add_flag(
        "--min-replicas",
        type=int,
        default=2,
        help="fewest relay replicas the scaling rule asks for",
    )
    parser.add_flag(
        "--max-replicas", type=int, default=10, help="most relay replicas the scaling rule asks for"
    )
    parser.add_flag(
        "--target-per-replica",
        type=positive_int,
        default=100,
        help="allocations one relay replica should carry",
    )
    parser.add_flag(
        "--target-bandwidth-per-replica",
        type=optional_bandwidth,
        default=None,
        help="relayed bandwidth one relay replica should carry, e.g. 200Mbit, 1Gbit or 25MB "
        "(bytes) per second; scales on it beside allocations, the larger proposal wins "
        "(default: off)",
    )
    parser.add_flag(
        "--bandwidth-window",
        type=parse_duration,
        default=f"{DEFAULT_WINDOW:g}s",
        help="relayed bytes per second are averaged over this long per relay",
    )
    parser.add_flag(
        "--stale-after",
        type=parse_duration,
        default="15s",
        help="a relay silent this long is exported as not up (still counted)",
    )
    parser.add_flag(
        "--expire-after",
        type=parse_duration,
        default="60s",
        help="a relay silent this long leaves the metrics and the scaling totals",
    )
    parser.add_flag(
        "--token-file",
        type=Path,
        default=None,
        help="file holding the bearer token relays must send (none: no auth)",
    )
    parser.add_flag(
        "--insecure-open-reports",
        action="store_true",
        help="accept reports without a token on a non-loopback --http address (labs only: "
        "anyone who reaches the port then decides how many relays run)",
    )
    parser.add_flag(
        "--max-relays",
        type=positive_int,
        default=1000,
        help="most relays tracked at once; reports from more are refused (503)",
    )
    parser.add_flag(
        "--fleet-user-quota",
        type=non_negative_int,
        default=0,
        help="allocations one user may hold across the whole fleet; each report's answer "
        "lists the users at or over it and relays refuse them new allocations (486) "
        "(0: off)",
    )
    parser.add_flag(
        "--log-level", type=log_level, default="info", help="debug, info, warning or error"
    )
    add_kubernetes_flags(parser)
    return parser


def add_kubernetes_flags(parser: FlagParser) -> None:
    parser.add_flag(
        "--kubernetes",
        action="store_true",
        help="use the Kubernetes API: watch the relay pods (a deleted pod's relay leaves the "
        "fleet at once; a silent relay whose pod exists stays, stale, instead of expiring) "
        "and set pod-deletion-cost on scale-in",
    )
    parser.add_flag(
        "--kubeconfig",
        type=optional_path,
        default=None,
        help="kubeconfig for --kubernetes (default: the pod's service account in a cluster, "
        "else $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_flag(
        "--relay-selector",
        type=kube_settings.selector_flag,
        default=kube_settings.DEFAULT_SELECTOR,
        help="label selector of the relay pods (--kubernetes)",
    )
    parser.add_flag(
        "--relay-namespace",
        type=kube_settings.namespace_flag,
        default="",
        help="namespace of the relay pods (--kubernetes; default: the scaler's own, "
        "or the kubeconfig context's)",
    )
    parser.add_flag(
        "--deletion-cost-interval",
        type=parse_duration,
        default="10s",
        help="how often relay pods' pod-deletion-cost is brought up to date during scale-in; "
        "also the least time between two patches of one pod (0: off) (--kubernetes)",
    )
    parser.add_flag(
        "--lease-name",
        default=kube_settings.DEFAULT_LEASE_NAME,
        help="the coordination.k8s.io Lease whose holder exports the fleet on /metrics "
        "and patches deletion costs, in the relay namespace (--kubernetes)",
    )
    parser.add_flag(
        "--lease-duration",
        type=parse_duration,
        default="15s",
        help="how long a follower waits after the leader's last renewal before taking the "
        "Lease over; whole seconds (--kubernetes)",
    )
    parser.add_flag(
        "--renew-deadline",
        type=parse_duration,
        default="10s",
        help="a leader that has not renewed for this long stops exporting; shorter than "
        "--lease-duration, whole seconds (--kubernetes)",
    )


def load(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ScalerConfig:
    """Parse flags over ``TURNSCALE_*`` variables; raise :class:`ConfigError` naming the flag."""
    args = build_parser().parse_flags(argv, environ)
    return from_args(args, environ)


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ScalerConfig:
    try:
        policy = ScalingPolicy(
            args.min_replicas,
            args.max_replicas,
            args.target_per_replica,
            args.target_bandwidth_per_replica,
        )
    except ValueError:
        raise ConfigError(
            f"--min-replicas ({args.min_replicas}) and --max-replicas ({args.max_replicas}) "
            "need 0 <= min <= max and max >= 1"
        ) from None
    if args.stale_after <= 0:
        raise ConfigError("--stale-after must be longer than 0s")
    if args.expire_after < args.stale_after:
        raise ConfigError(
            f"--expire-after ({args.expire_after:g}s) must not be shorter than "
            f"--stale-after ({args.stale_after:g}s)"
        )
    if args.bandwidth_window < MIN_BANDWIDTH_WINDOW:
        raise ConfigError(
            f"--bandwidth-window ({args.bandwidth_window:g}s) must be at least "
            f"{MIN_BANDWIDTH_WINDOW:g}s (relays report every few seconds)"
        )
    check_grpc_tls(args.grpc_tls_cert, args.grpc_tls_key, args.grpc_client_ca)
    kubernetes = None
    if args.kubernetes:
        kubernetes = kube_settings.resolve(
            kubeconfig=args.kubeconfig,
            relay_selector=args.relay_selector,
            relay_namespace=args.relay_namespace,
            deletion_cost_interval=args.deletion_cost_interval,
            environ=os.environ if environ is None else environ,
            lease_name=args.lease_name,
            lease=kube_settings.lease_timing(args.lease_duration, args.renew_deadline),
        )
    token = read_token(args.token_file) if args.token_file else None
    check_reports_closed(args.http, token, kubernetes, args.insecure_open_reports)
    return ScalerConfig(
        http=args.http,
        grpc=args.grpc,
        policy=policy,
        stale_after=args.stale_after,
        expire_after=args.expire_after,
        token=token,
        max_relays=args.max_relays,
        log_level=args.log_level,
        grpc_tls_cert=args.grpc_tls_cert,
        grpc_tls_key=args.grpc_tls_key,
        grpc_client_ca=args.grpc_client_ca,
        kubernetes=kubernetes,
        open_reports=args.insecure_open_reports,
        bandwidth_window=args.bandwidth_window,
        fleet_user_quota=args.fleet_user_quota,
    )


def check_reports_closed(
    http: HostPort, token: str | None, kubernetes: object, open_reports: bool
) -> None:
    """Reports decide how many relays run and which one is deleted first: off loopback, a
    scaler needs a token, or pod-bound reports (--kubernetes), or an explicit opt-out."""
    if token is not None or kubernetes is not None or open_reports or is_loopback(http.host):
        return
    raise ConfigError(
        f"--http {http} is reachable from other machines but reports need no token: give "
        "--token-file FILE (the bearer token relays send), or --kubernetes (reports bound to "
        "the relay pods), or listen on 127.0.0.1; --insecure-open-reports accepts anyone's "
        "reports (labs only)"
    )


def check_grpc_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> None:
    """Fail at start-up, naming the flag, rather than at KEDA's first handshake."""
    if cert is not None and key is None:
        raise ConfigError("--grpc-tls-cert needs --grpc-tls-key as well (the certificate's key)")
    if key is not None and cert is None:
        raise ConfigError("--grpc-tls-key needs --grpc-tls-cert as well (the key's certificate)")
    if client_ca is not None and cert is None:
        raise ConfigError(
            "--grpc-client-ca needs --grpc-tls-cert and --grpc-tls-key (mutual TLS is TLS first)"
        )
    if cert is None or key is None:
        return
    _read_pem("--grpc-tls-cert", cert, "CERTIFICATE-----", "PEM certificate")
    key_text = _read_pem("--grpc-tls-key", key, "PRIVATE KEY-----", "PEM private key")
    if "ENCRYPTED" in key_text:
        raise ConfigError(f"--grpc-tls-key: {str(key)!r} is encrypted; give an unencrypted key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=b"")
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"--grpc-tls-key: {str(key)!r} is not the key of --grpc-tls-cert {str(cert)!r} "
            f"(or one of them is not valid PEM): {exc}"
        ) from None
    if client_ca is None:
        return
    _read_pem("--grpc-client-ca", client_ca, "CERTIFICATE-----", "PEM CA certificate")
    try:
        context.load_verify_locations(cafile=client_ca)
    except ssl.SSLError as exc:
        raise ConfigError(f"--grpc-client-ca: {str(client_ca)!r} is not valid PEM: {exc}") from None


def _read_pem(flag: str, path: Path, marker: str, what: str) -> str:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag}: cannot read {str(path)!r}: {exc}") from None
    if "-----BEGIN " not in text or marker not in text:
        raise ConfigError(f"{flag}: {str(path)!r} holds no {what}")
    return text
