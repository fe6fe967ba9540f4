"""``turnscale relay --config FILE...`` or ``--kubernetes``: the flags, and the relay settings
they lead to.

With either, the Gateway API objects replace the flags that say the same thing:
``--listen`` (the Gateway's listeners, bound on ``--listener-address``), ``--realm``,
``--user*`` and ``--auth-secret*`` (the GatewayConfig), ``--allow-peer`` (the routes).
Giving one of those too is an error rather than a guess at which wins. What they say instead
reaches the relay's config as :class:`relay.config.Overrides` (:func:`overrides`;
:mod:`relay.settings` puts the two together).
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from relay.config import Listen, Overrides, Transport
from relay.core.certs import TlsFiles
from relay.core.peer_policy import PeerRule
from relay.gateway.translate import (
    EphemeralAuth,
    GatewaySettings,
    Key,
    ListenerSettings,
    StaticAuth,
)
from scaler.common.flags import ConfigError, FlagParser, HostPort, parse_duration
from scaler.common.kube.access import KubeAccess, resolve_access
from scaler.common.names import is_dns_label, is_dns_subdomain

__all__ = [
    "GatewayOptions",
    "add_flags",
    "from_args",
    "listen_of",
    "mounted_certificates",
    "overrides",
    "relay_fields",
]

DEFAULT_SECRETS_DIR: Final = Path("/etc/turnscale/gateway-secrets")
#: The relay transport of each Gateway listener transport (checked names, typed).
TRANSPORTS: Final[dict[str, Transport]] = {"udp": "udp", "tcp": "tcp", "tls": "tls", "dtls": "dtls"}
#: Flags the Gateway API objects replace, and the argparse attribute that tells they were given.
REPLACED: Final = (
    ("--listen", "listen"),
    ("--realm", "realm"),
    ("--user", "user"),
    ("--user-file", "user_file"),
    ("--auth-secret", "auth_secret"),
    ("--auth-secret-file", "auth_secret_file"),
    ("--allow-peer", "allow_peer"),
)


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """How the relay takes its configuration from Gateway API objects."""

    files: tuple[Path, ...]
    #: The objects of ``--config``, translated at start-up; None with ``--kubernetes``.
    settings: GatewaySettings | None
    secrets_dir: Path = DEFAULT_SECRETS_DIR
    listener_address: str = "0.0.0.0"
    resolve_interval: float = 10.0
    #: ``--gateway-config``; an empty namespace means the Gateway's.
    gateway_config: Key | None = field(default=None)
    #: ``--kubernetes``: where the API is.
    kubernetes: KubeAccess | None = None
    #: File mode: the mounted certificate of each TURN-TLS/TURN-DTLS listener, by name.
    certificates: Mapping[str, TlsFiles] = field(default_factory=dict)


def _listener_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _object_ref(text: str) -> tuple[str, str]:
    namespace, slash, name = text.strip().rpartition("/")
    if (slash and not is_dns_label(namespace)) or not is_dns_subdomain(name):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME or NAMESPACE/NAME")
    return namespace, name


def add_source_flags(parser: FlagParser) -> None:
    """Where the Gateway API objects come from (the relay's and ``turnscale auth``'s)."""
    parser.add_flag(
        "--config",
        action="append",
        type=Path,
        metavar="FILE",
        help="Gateway API YAML (Gateway, UDPRoute, GatewayConfig, StaticService, GatewayClass, "
        "ReferenceGrant), "
        "repeatable: listeners, credentials and peers come from these objects",
    )
    parser.add_flag(
        "--gateway-config",
        type=_object_ref,
        default=None,
        metavar="[NAMESPACE/]NAME",
        help="the GatewayConfig to use (default: the GatewayClass's parametersRef, else the "
        "only one in the Gateway's namespace)",
    )
    parser.add_flag(
        "--secrets-dir",
        type=Path,
        default=str(DEFAULT_SECRETS_DIR),
        help="where Secret references are read with --config: DIR/NAMESPACE/NAME/KEY (each "
        "Secret mounted as a volume at DIR/NAMESPACE/NAME)",
    )


def add_flags(parser: FlagParser) -> None:
    """The relay's: the sources, and how listeners bind and Services are looked up."""
    add_source_flags(parser)
    parser.add_flag(
        "--listener-address",
        type=_listener_address,
        default="0.0.0.0",
        help="the address the Gateway's listeners bind",
    )
    parser.add_flag(
        "--resolve-interval",
        type=parse_duration,
        default="10s",
        help="how often routed Services are looked up again (NAME.NAMESPACE.svc)",
    )
    parser.add_flag(
        "--kubernetes",
        action="store_true",
        default=False,
        help="take the Gateway API objects live from the Kubernetes API (the Gateway "
        "--namespace/--gateway) and keep up with their changes",
    )
    parser.add_flag(
        "--kubeconfig",
        type=Path,
        default=None,
        help="credentials for --kubernetes (default: the pod's service account, else "
        "$KUBECONFIG or ~/.kube/config)",
    )


def load_settings(
    args: argparse.Namespace, gateway_name: str | None, namespace: str
) -> tuple[GatewaySettings, Key | None]:
    """The settings of ``--config`` (and the ``--gateway-config`` key); ConfigError names the
    file, object and field of the first problem, a route's included."""
    from relay.gateway.files import SecretsDir, load_catalog
    from relay.gateway.objects import GatewayError
    from relay.gateway.translate import translate

    try:
        catalog = load_catalog(tuple(args.config), namespace)
        gateway = _choose_gateway(catalog.gateways, gateway_name, namespace)
        config_ref = None
        if args.gateway_config is not None:
            config_ref = (args.gateway_config[0] or gateway[0], args.gateway_config[1])
        settings = translate(catalog, gateway, SecretsDir(args.secrets_dir), config=config_ref)
    except GatewayError as exc:
        raise ConfigError(f"--config: {exc}") from None
    if settings.problems:
        raise ConfigError(f"--config: {settings.problems[0]}")
    return settings, config_ref


def from_args(args: argparse.Namespace, namespace: str) -> GatewayOptions | None:
    """None without ``--config``; else the objects loaded and translated (ConfigError names
    the file, object and field of the first problem; nothing is half-applied)."""
    if not args.config and not args.kubernetes:
        return None
    source = "--kubernetes" if args.kubernetes else "--config"
    if args.config and args.kubernetes:
        raise ConfigError("--config cannot be combined with --kubernetes: choose one source")
    for flag, attribute in REPLACED:
        if getattr(args, attribute, None):
            raise ConfigError(
                f"{flag} cannot be combined with {source}: the Gateway API objects say it"
            )
    if not 0 < args.resolve_interval <= 3600:
        raise ConfigError("--resolve-interval must be more than 0s and at most 1h")
    if args.kubernetes:
        return GatewayOptions(
            files=(),
            settings=None,
            listener_address=args.listener_address,
            gateway_config=args.gateway_config,
            kubernetes=kube_settings(args.kubeconfig, namespace),
        )
    files = tuple(args.config)
    settings, config_ref = load_settings(args, args.gateway, namespace)
    return GatewayOptions(
        certificates=mounted_certificates(settings, args.secrets_dir),
        files=files,
        settings=settings,
        secrets_dir=args.secrets_dir,
        listener_address=args.listener_address,
        resolve_interval=args.resolve_interval,
        gateway_config=config_ref,
    )


def mounted_certificates(settings: GatewaySettings, secrets_dir: Path) -> dict[str, TlsFiles]:
    """File mode: each TLS/DTLS listener's mounted Secret, checked now (ConfigError names the
    listener and Secret: a relay never starts a listener without its certificate)."""
    import time

    from relay.gateway.certificates import mounted
    from relay.gateway.files import SecretsDir
    from relay.gateway.translate import RefProblem

    found: dict[str, TlsFiles] = {}
    source = SecretsDir(secrets_dir)
    for item in settings.listeners:
        if not item.secure:
            continue
        where = f"--config: Gateway {settings.namespace}/{settings.name}: listener {item.name!r}"
        if item.ref_problem is not None:
            raise ConfigError(f"{where}: {item.ref_problem.message}")
        assert item.certificate is not None, "a secure listener has a ref or a problem"
        outcome = mounted(source, secrets_dir, item.certificate, time.time())
        if isinstance(outcome, RefProblem):
            raise ConfigError(f"{where}: {outcome.message}")
        found[item.name] = outcome
    return found


def listen_of(item: ListenerSettings, host: str, certificate: TlsFiles | None = None) -> Listen:
    """The relay listener of a Gateway listener, bound on ``host``."""
    transport: Transport = TRANSPORTS[item.transport]
    return Listen(transport, HostPort(host, item.port), certificate)


def kube_settings(kubeconfig: Path | None, namespace: str) -> KubeAccess:
    """Where the Kubernetes API is, the way every ``--kubernetes`` command finds it."""
    import os

    return resolve_access(kubeconfig=kubeconfig, namespace=namespace, environ=os.environ)


def _choose_gateway(gateways: Mapping[Key, object], name: str | None, namespace: str) -> Key:
    from relay.gateway.objects import GatewayError

    keys = sorted(gateways)
    if name is not None:
        named = [key for key in keys if key[1] == name]
        if len(named) > 1:
            named = [key for key in named if key[0] == namespace]
            if len(named) != 1:
                raise GatewayError(
                    f"Gateway {name} (--gateway) is in several namespaces: choose one with "
                    "--namespace"
                )
        if not named:
            raise GatewayError(f"Gateway {name} (--gateway): not found")
        return named[0]
    if len(keys) != 1:
        found = ", ".join(f"{ns}/{n}" for ns, n in keys) or "none"
        raise GatewayError(f"expected one Gateway, found {found}: choose one with --gateway")
    return keys[0]


def relay_fields(
    settings: GatewaySettings | None,
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[PeerRule, ...]]:
    """``(users, auth_secrets, allow_peers)`` for :class:`relay.config.RelayConfig`: none
    yet in live mode (no credential works and no peer is reachable until the objects are
    read)."""
    if settings is None:
        return (), (), ()
    auth = settings.auth
    users = ((auth.username, auth.password),) if isinstance(auth, StaticAuth) else ()
    secrets = (auth.secret,) if isinstance(auth, EphemeralAuth) else ()
    return users, secrets, settings.static_peers


def overrides(options: GatewayOptions) -> Overrides:
    """What the objects say in place of the relay's listener, realm, credential and peer
    flags (in live mode: no listener, credential or peer until the objects are read)."""
    settings = options.settings
    listen = tuple(
        listen_of(item, options.listener_address, options.certificates.get(item.name))
        for item in (settings.listeners if settings is not None else ())
    )
    users, secrets, allow_peers = relay_fields(settings)
    return Overrides(
        listen=listen,
        realm=settings.realm if settings is not None else "turnscale",
        users=users,
        auth_secrets=secrets,
        allow_peers=allow_peers,
        listener_host=options.listener_address,
        gateway=settings.name if settings is not None else None,
        rest_max_lifetime=(
            settings.auth.lifetime
            if settings is not None and isinstance(settings.auth, EphemeralAuth)
            else None
        ),
    )
