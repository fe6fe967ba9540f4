"""``turnscale relay`` flags: defaults, TURNSCALE_* variables, errors that name the flag and
never show a secret; credential files."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import settings
from relay.config import Listen, RelayConfig, default_relay_address, parse_listen
from relay.core.credentials import Credentials, parse_user, read_secret_file, read_user_file
from relay.core.peer_policy import parse_peer_rule
from scaler.common.flags import ConfigError, HostPort

USER = ["--user", "alice:s3cret-pw"]


def load(argv: list[str], environ: dict[str, str]) -> RelayConfig:
    """The relay config ``turnscale relay`` runs with, from these flags and variables."""
    return settings.load(argv, environ).relay


def test_defaults_match_the_design() -> None:
    loaded = load(USER, environ={})
    assert loaded.listen == (
        Listen("udp", HostPort("0.0.0.0", 3478)),
        Listen("tcp", HostPort("0.0.0.0", 3478)),
    )
    assert loaded.health == HostPort("0.0.0.0", 8086)
    assert loaded.relay_ports == (49152, 65535)
    assert loaded.max_lifetime == 3600
    assert (loaded.user_quota, loaded.total_quota) == (0, 0)
    assert loaded.drain_timeout == 300.0
    assert loaded.unready_on_drain is False
    assert loaded.realm == "turnscale"
    assert loaded.allow_peers == () and not loaded.allow_loopback_peers
    assert not loaded.legacy_channels and loaded.event_loop == "uvloop"
    assert loaded.users == (("alice", "s3cret-pw"),)


def test_every_flag() -> None:
    loaded = load(
        [
            *("--listen", "udp://127.0.0.1:0", "--listen", "tcp://[::1]:3479"),
            *("--realm", "example.org", "--user", "a:1", "--user", "b:2:3"),
            *("--auth-secret", "one", "--auth-secret", "two"),
            *("--allow-peer", "10.0.0.0/8:5000-6000", "--allow-loopback-peers"),
            *("--relay-ports", "50000-50100", "--relay-address", "127.0.0.1"),
            *("--max-lifetime", "10m", "--user-quota", "3", "--total-quota", "100"),
            *("--drain-timeout", "45s", "--health", "127.0.0.1:0", "--log-level", "debug"),
            *("--legacy-channels", "--event-loop", "asyncio"),
        ],
        environ={},
    )
    assert loaded.listen == (
        Listen("udp", HostPort("127.0.0.1", 0)),
        Listen("tcp", HostPort("::1", 3479)),
    )
    assert loaded.users == (("a", "1"), ("b", "2:3"))
    assert loaded.auth_secrets == ("one", "two")
    assert loaded.allow_peers == (parse_peer_rule("10.0.0.0/8:5000-6000"),)
    assert loaded.allow_loopback_peers and loaded.legacy_channels
    assert loaded.relay_ports == (50000, 50100) and loaded.relay_address == "127.0.0.1"
    assert (loaded.max_lifetime, loaded.user_quota, loaded.total_quota) == (600, 3, 100)
    assert loaded.drain_timeout == 45.0 and loaded.log_level == "debug"
    assert loaded.event_loop == "asyncio"


def test_environment_sets_flags_and_command_line_wins() -> None:
    env = {
        "TURNSCALE_USER": "alice:pw1,bob:pw2",
        "TURNSCALE_LISTEN": "udp://127.0.0.1:0",
        "TURNSCALE_ALLOW_LOOPBACK_PEERS": "true",
        "TURNSCALE_TOTAL_QUOTA": "7",
        "TURNSCALE_RELAY_ADDRESS": "127.0.0.1",
    }
    loaded = load(["--total-quota", "8"], environ=env)
    assert loaded.user_names == ("alice", "bob")
    assert loaded.listen == (Listen("udp", HostPort("127.0.0.1", 0)),)
    assert loaded.allow_loopback_peers and loaded.total_quota == 8
    assert load(["--user", "carol:x"], environ=env).user_names == ("carol",)


def test_credentials_from_files(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("# mounted Secret\nalice:pw1\n\n  bob:pw:with:colons  \n")
    secrets = tmp_path / "secrets"
    secrets.write_text("current\n# old one, kept while clients rotate\nprevious\n")
    loaded = load(["--user-file", str(users), "--auth-secret-file", str(secrets)], environ={})
    assert loaded.users == (("alice", "pw1"), ("bob", "pw:with:colons"))
    assert loaded.auth_secrets == ("current", "previous")


def test_relay_refuses_to_start_without_credentials() -> None:
    with pytest.raises(ConfigError, match="no credentials"):
        load([], environ={})


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--listen", "udp://nowhere:1"], {}, "--listen"),
        (["--listen", "sctp://127.0.0.1:1"], {}, "--listen"),
        (["--listen", "udp://127.0.0.1:99999"], {}, "--listen"),
        (["--listen", "udp://127.0.0.1:5", "--listen", "udp://127.0.0.1:5"], {}, "--listen"),
        ([], {"TURNSCALE_LISTEN": "tcp:/x"}, "TURNSCALE_LISTEN"),
        (["--realm", " "], {}, "--realm"),
        (["--allow-peer", "10.0.0.1/8"], {}, "--allow-peer"),
        (["--relay-ports", "6000-5000"], {}, "--relay-ports"),
        (["--relay-address", "0.0.0.0"], {}, "--relay-address"),
        (["--relay-address", "example.org"], {}, "--relay-address"),
        (["--relay-address", "192.0.2.123"], {}, "--relay-address"),
        (["--max-lifetime", "0s"], {}, "--max-lifetime"),
        (["--user-quota", "-1"], {}, "--user-quota"),
        (["--total-quota", "x"], {}, "--total-quota"),
        (["--drain-timeout", "soon"], {}, "--drain-timeout"),
        (["--drain-ready-status", "maybe"], {}, "--drain-ready-status"),
        (["--health", "nowhere"], {}, "--health"),
        (["--log-level", "loud"], {}, "--log-level"),
        (["--event-loop", "trio"], {}, "--event-loop"),
        (["--user-file", "/nonexistent/users"], {}, "--user-file"),
        (["--auth-secret-file", "/nonexistent/secrets"], {}, "--auth-secret-file"),
        (["--no-such-flag"], {}, "--no-such-flag"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load([*USER, *argv], environ=env)


@pytest.mark.parametrize(
    "argv",
    [
        ["--user", "alice"],
        ["--user", ":hunter2-secret"],
        ["--user", "alice:"],
        ["--user", "alice:hunter2-secret", "--user", "alice:hunter2-secret"],
        ["--auth-secret", " hunter2-secret"],
        ["--auth-secret", ""],
    ],
)
def test_credential_errors_never_show_the_secret(argv: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        load(argv, environ={})
    message = str(error.value)
    assert "hunter2" not in message
    assert "--user" in message or "--auth-secret" in message


def test_credential_file_errors_name_the_line_not_the_secret(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:ok\nhunter2-secret\n")
    with pytest.raises(ConfigError, match="line 2") as error:
        load(["--user-file", str(users)], environ={})
    assert "hunter2" not in str(error.value)
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no secret"):
        load(["--auth-secret-file", str(empty)], environ={})


def test_secrets_stay_out_of_repr() -> None:
    loaded = load(["--user", "alice:hunter2-pw", "--auth-secret", "hunter2-secret"], environ={})
    assert "hunter2" not in repr(loaded)
    assert "hunter2" not in str(loaded)
    whole = settings.load(["--user", "alice:hunter2-pw", "--auth-secret", "hunter2-secret"], {})
    assert "hunter2" not in repr(whole)
    store = Credentials(loaded.realm, loaded.users, loaded.auth_secrets)
    assert "hunter2" not in repr(store)


def test_parsers() -> None:
    assert parse_listen("udp://[::1]:3478") == Listen("udp", HostPort("::1", 3478))
    assert str(parse_listen("tcp://0.0.0.0:3478")) == "tcp://0.0.0.0:3478"
    assert parse_user("a:b:c", "x") == ("a", "b:c")
    for bad in ("nocolon", ":pw", " a:pw", "a:"):
        with pytest.raises(ValueError):
            parse_user(bad, "x")


def test_file_readers(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("a:1\r\nb:2\r\n")
    assert read_user_file(path) == [("a", "1"), ("b", "2")]
    path.write_text("s1\n\ns2\n")
    assert read_secret_file(path) == ["s1", "s2"]
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="cannot read"):
        read_user_file(path)


def test_default_relay_address() -> None:
    assert default_relay_address([parse_listen("udp://127.0.0.1:3478")]) == "127.0.0.1"
    assert (
        default_relay_address([parse_listen("udp://0.0.0.0:1"), parse_listen("tcp://[::1]:2")])
        == "::1"
    )
    wildcard = default_relay_address([parse_listen("udp://0.0.0.0:3478")])
    assert wildcard and wildcard != "0.0.0.0"
