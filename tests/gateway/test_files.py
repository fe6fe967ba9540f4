"""``turnscale relay --config FILE...``: YAML files and mounted Secrets to a relay config;
every problem is one error naming file, object and field, and nothing half-applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay import settings as relay_settings
from relay.config import Listen
from relay.gateway.files import SecretsDir, load_objects
from relay.gateway.translate import EphemeralAuth, ServiceBackend
from relay.settings import Settings
from scaler.common.flags import ConfigError, HostPort
from tests.gateway.objects import (
    EXAMPLE,
    by_kind,
    changed,
    example,
    gateway,
    route,
    static_config,
    static_service,
    write_secret,
    write_yaml,
)

SECRET = "shared-secret-from-a-mounted-file"


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    root = tmp_path / "secrets"
    write_secret(root, "stunner", "stunner-credentials", {"password": SECRET + "\n"})
    return root


def load(*flags: str, environ: dict[str, str] | None = None) -> Settings:
    return relay_settings.load(["--relay-address", "127.0.0.1", *flags], environ=environ or {})


def refused(*flags: str, fragments: tuple[str, ...]) -> str:
    with pytest.raises(ConfigError) as caught:
        load(*flags)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert SECRET not in message
    return message


def test_the_issue_example(secrets_dir: Path) -> None:
    loaded = load("--config", str(EXAMPLE), "--secrets-dir", str(secrets_dir))
    assert loaded.relay.listen == (
        Listen("udp", HostPort("0.0.0.0", 3478)),
        Listen("tcp", HostPort("0.0.0.0", 3478)),
    )
    assert loaded.relay.realm == "stunner.example.org"
    assert loaded.relay.users == () and loaded.relay.auth_secrets == (SECRET,)
    assert loaded.relay.allow_peers == () and loaded.relay.peers_exclusive
    assert loaded.relay.reporting.gateway == "stunner-gateway"
    assert loaded.gateway is not None
    assert loaded.gateway.files == (EXAMPLE,)
    settings = loaded.gateway.settings
    assert settings is not None
    assert settings.auth == EphemeralAuth(SECRET, 86400, "stunner")
    assert settings.services == (ServiceBackend("apps", "media-server"),)
    assert SECRET not in repr(loaded)


def test_several_files_and_the_environment(tmp_path: Path, secrets_dir: Path) -> None:
    documents = example()
    first = write_yaml(tmp_path / "gateway.yaml", documents[:1])
    rest = write_yaml(tmp_path / "rest.yaml", [{}, *documents[1:]][1:])
    by_flags = load(
        "--config", str(first), "--config", str(rest), "--secrets-dir", str(secrets_dir)
    )
    by_env = load(
        environ={
            "TURNSCALE_CONFIG": f"{first},{rest}",
            "TURNSCALE_SECRETS_DIR": str(secrets_dir),
            "TURNSCALE_LISTENER_ADDRESS": "127.0.0.1",
        }
    )
    assert by_flags.relay.auth_secrets == by_env.relay.auth_secrets == (SECRET,)
    assert by_env.relay.listen[0] == Listen("udp", HostPort("127.0.0.1", 3478))


def test_a_kubectl_list_and_empty_documents(tmp_path: Path, secrets_dir: Path) -> None:
    path = tmp_path / "list.yaml"
    write_yaml(path, [{"apiVersion": "v1", "kind": "List", "items": example()}])
    path.write_text("---\n" + path.read_text() + "---\n")
    loaded = load("--config", str(path), "--secrets-dir", str(secrets_dir))
    assert loaded.relay.auth_secrets == (SECRET,)


def test_static_credentials_and_static_services(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "gw.yaml",
        [
            gateway({"name": "udp", "port": 3479, "protocol": "TURN-UDP"}),
            static_config("alice", "wonderland", realm="turn.example.org"),
            static_service("192.0.2.0/24"),
            route(
                {
                    "group": "stunner.l7mp.io",
                    "kind": "StaticService",
                    "name": "media-net",
                    "port": 5000,
                }
            ),
        ],
    )
    loaded = load("--config", str(path), "--listener-address", "127.0.0.1")
    assert loaded.relay.listen == (Listen("udp", HostPort("127.0.0.1", 3479)),)
    assert loaded.relay.users == (("alice", "wonderland"),) and loaded.relay.auth_secrets == ()
    assert [str(rule) for rule in loaded.relay.allow_peers] == ["192.0.2.0/24:5000"]
    assert loaded.relay.realm == "turn.example.org"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--listen", "udp://127.0.0.1:3478"),
        ("--realm", "x"),
        ("--user", "a:b"),
        ("--auth-secret", "s"),
        ("--allow-peer", "10.0.0.0/8"),
    ],
)
def test_flags_the_objects_replace_are_refused_with_config(
    flag: str, value: str, secrets_dir: Path
) -> None:
    refused(
        "--config",
        str(EXAMPLE),
        "--secrets-dir",
        str(secrets_dir),
        flag,
        value,
        fragments=(f"{flag} cannot be combined with --config",),
    )


def test_a_missing_secret_names_the_field_and_the_mount_path(tmp_path: Path) -> None:
    refused(
        "--config",
        str(EXAMPLE),
        "--secrets-dir",
        str(tmp_path),
        fragments=(
            "--config: GatewayConfig stunner/stunner-config: spec.password: Secret "
            "stunner/stunner-credentials: not mounted",
            str(tmp_path / "stunner" / "stunner-credentials"),
        ),
    )
    write_secret(tmp_path, "stunner", "stunner-credentials", {"other": "x"})
    refused(
        "--config",
        str(EXAMPLE),
        "--secrets-dir",
        str(tmp_path),
        fragments=("Secret stunner/stunner-credentials has no key 'password'",),
    )


def bad_file(tmp_path: Path, documents: list[dict[str, Any]]) -> str:
    return str(write_yaml(tmp_path / "bad.yaml", documents))


def test_a_bad_kind_names_file_and_document(tmp_path: Path, secrets_dir: Path) -> None:
    documents = [
        *example(),
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "stunner"}},
    ]
    path = bad_file(tmp_path, documents)
    refused(
        "--config",
        path,
        "--secrets-dir",
        str(secrets_dir),
        fragments=(f"--config: {path} document 4: Deployment stunner: kind 'Deployment'",),
    )


def test_bad_objects_name_file_document_object_and_field(tmp_path: Path, secrets_dir: Path) -> None:
    documents = example()
    documents[0] = changed(documents[0], "spec.listeners.1.protocol", "TURN-SCTP")
    path = bad_file(tmp_path, documents)
    refused(
        "--config",
        path,
        "--secrets-dir",
        str(secrets_dir),
        fragments=(
            f"{path} document 1: Gateway stunner/stunner-gateway: spec.listeners[1].protocol: "
            "'TURN-SCTP' is not a TURN listener protocol",
        ),
    )


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: Gateway\n  spec: [\n")
    refused("--config", str(path), fragments=(f"{path}: not YAML at line",))
    refused("--config", str(tmp_path / "absent.yaml"), fragments=("absent.yaml: cannot read it",))


def test_route_problems_refuse_the_whole_configuration(tmp_path: Path, secrets_dir: Path) -> None:
    documents = [
        *example(),
        route(
            {"group": "stunner.l7mp.io", "kind": "StaticService", "name": "nowhere"}, name="second"
        ),
    ]
    refused(
        "--config",
        bad_file(tmp_path, documents),
        "--secrets-dir",
        str(secrets_dir),
        fragments=(
            "UDPRoute stunner/second: spec.rules[0].backendRefs[0]: StaticService "
            "stunner/nowhere not found",
        ),
    )
    documents = [
        *example(),
        route(
            {"name": "x"},
            name="elsewhere",
            namespace="apps",
            parents=[{"name": "stunner-gateway", "namespace": "stunner"}],
        ),
    ]
    refused(
        "--config",
        bad_file(tmp_path, documents),
        "--secrets-dir",
        str(secrets_dir),
        fragments=(
            "UDPRoute apps/elsewhere: the listeners of Gateway stunner/stunner-gateway "
            "do not admit it",
        ),
    )


def test_choosing_the_gateway(tmp_path: Path, secrets_dir: Path) -> None:
    documents = [*example(), changed(by_kind(example(), "Gateway"), "metadata.name", "second")]
    path = bad_file(tmp_path, documents)
    common = ("--config", path, "--secrets-dir", str(secrets_dir))
    refused(
        *common,
        fragments=(
            "expected one Gateway, found stunner/second, "
            "stunner/stunner-gateway: choose one with --gateway",
        ),
    )
    assert load(*common, "--gateway", "second").relay.reporting.gateway == "second"
    refused(*common, "--gateway", "third", fragments=("Gateway third (--gateway): not found",))
    twin = changed(by_kind(example(), "Gateway"), "metadata.namespace", "other")
    twins = bad_file(tmp_path, [*example(), twin])
    chosen = load(
        "--config",
        twins,
        "--secrets-dir",
        str(secrets_dir),
        "--gateway",
        "stunner-gateway",
        "--namespace",
        "stunner",
    )
    assert chosen.gateway is not None and chosen.gateway.settings is not None
    assert chosen.gateway.settings.namespace == "stunner"
    refused(
        "--config",
        twins,
        "--secrets-dir",
        str(secrets_dir),
        "--gateway",
        "stunner-gateway",
        fragments=("in several namespaces: choose one with --namespace",),
    )


def test_documents_without_namespace_take_the_relay_namespace(tmp_path: Path) -> None:
    documents = [
        changed(d, "metadata.namespace", None)
        for d in (gateway(), static_config(), route({"name": "sfu"}))
    ]
    loaded = load("--config", bad_file(tmp_path, documents), "--namespace", "team-a")
    assert loaded.gateway is not None and loaded.gateway.settings is not None
    assert loaded.gateway.settings.services == (ServiceBackend("team-a", "sfu"),)


def test_gateway_config_flag(tmp_path: Path) -> None:
    documents = [
        gateway(),
        static_config(name="a", password="pa"),
        static_config(name="b", password="pb", namespace="other"),
    ]
    path = bad_file(tmp_path, documents)
    assert load("--config", path, "--gateway-config", "other/b").relay.users == (("user-1", "pb"),)
    assert load("--config", path, "--gateway-config", "a").relay.users == (("user-1", "pa"),)
    refused(
        "--config",
        path,
        "--gateway-config",
        "Bad Name",
        fragments=("--gateway-config", "is not NAME or NAMESPACE/NAME"),
    )


def test_resolve_interval_and_listener_address_are_checked(secrets_dir: Path) -> None:
    common = ("--config", str(EXAMPLE), "--secrets-dir", str(secrets_dir))
    refused(*common, "--resolve-interval", "0s", fragments=("--resolve-interval must be",))
    refused(*common, "--listener-address", "example.org", fragments=("--listener-address",))
    assert load(*common, "--resolve-interval", "2s").gateway.resolve_interval == 2.0  # type: ignore[union-attr]


def test_without_config_the_flags_work_as_before() -> None:
    loaded = load("--user", "a:b")
    assert loaded.gateway is None and not loaded.relay.peers_exclusive
    assert loaded.relay.realm == "turnscale" and loaded.relay.reporting.gateway == "stunner-gateway"
    refused(fragments=("no credentials", "--config"))


def test_the_secrets_dir_reads_a_kubelet_mount(tmp_path: Path) -> None:
    write_secret(tmp_path, "ns", "creds", {"username": "u", "password": "p\n"})
    assert SecretsDir(tmp_path).secret("ns", "creds") == {"username": "u", "password": "p"}
    with pytest.raises(LookupError, match="not mounted"):
        SecretsDir(tmp_path).secret("ns", "other")


def test_load_objects_keeps_document_order(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "x.yaml", example())
    kinds = [type(o).__name__ for o in load_objects([path], "default")]
    assert kinds == ["Gateway", "UDPRoute", "GatewayConfig"]
